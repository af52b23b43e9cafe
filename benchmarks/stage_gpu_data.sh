#!/usr/bin/env bash
# The data and tokenizer the GPU runs read (benchmarks/run_gpu_batch.sh), staged into the ignored .gpu/:
#   .gpu/data   rag.jsonl and cnndm.jsonl (../shared/data/llma-rag)
#   .gpu/squad  dev-v1.1.json (../shared/data/squad-v1.1-dev; 4.7 MB, carried only by the call that runs squad)
#   .gpu/tok    the default model's tokenizer, saved: the random-weight runs need no model file
# Run here, from the project root, with the project's virtualenv active.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo '/.gpu/' >> .git/info/exclude; }
shared=../shared/data
mkdir -p .gpu/data .gpu/squad
cp "$shared/llma-rag/rag.jsonl" "$shared/llma-rag/cnndm.jsonl" .gpu/data/
cp "$shared/squad-v1.1-dev/dev-v1.1.json" .gpu/squad/
HF_HUB_OFFLINE=1 python -c "from llma.loading import load_model; load_model(device='cpu').tokenizer.save_pretrained('.gpu/tok')"
du -sh .gpu/data .gpu/squad .gpu/tok
