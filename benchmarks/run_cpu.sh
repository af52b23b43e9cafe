#!/usr/bin/env bash
# The CPU figures quoted in README.md (2-core machine, fp32). Run from the repository root.
set -euo pipefail
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
PY=${PY:-.venv/bin/python}
RAG=../shared/data/llma-rag/rag.jsonl
RES=benchmarks/results
$PY -m benchmarks.decode --data $RAG --mode forced --limit 8 --max-new-tokens 128 --device cpu --threads 1 \
  --variant fixed_k8:adaptive=false,k=8 --variant policy_first:policy=first \
  --variant policy_longest:policy=longest --variant min_n1:min_n=1 --json $RES/cpu_rag_forced.json
$PY -m benchmarks.decode --data $RAG --mode forced --limit 8 --max-new-tokens 128 --device cpu --threads 1 \
  --refs alone --json $RES/cpu_rag_forced_refs_alone.json
$PY -m benchmarks.decode --data $RAG --mode free --limit 8 --max-new-tokens 96 --device cpu --threads 1 \
  --variant fixed_k8:adaptive=false,k=8 --variant min_n1:min_n=1 --json $RES/cpu_rag_free.json
