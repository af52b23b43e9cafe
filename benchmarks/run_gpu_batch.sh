#!/usr/bin/env bash
# The GPU runs of the batch engine (issue 22), the model families (issue 25) and the server (issue 23),
# planned as back-to-back calls of at most 600 s (the machine keeps /tmp about 30 s after a call).
# Stage here first: bash ../shared/gpu/stage-model.sh && bash benchmarks/stage_gpu_data.sh
#   (and for `serve`: bash benchmarks/stage_serve_wheels.sh)
# Issue 22's runs, three calls back to back:
#   1. carry [".gpu/part1", ".gpu/whl", ".gpu/data", ".gpu/tok"]:
#      mkdir -p /tmp/llma && cp -r .gpu/part1/. .gpu/whl /tmp/llma/ && bash benchmarks/run_gpu_batch.sh COMMIT tests steps135 forced135
#      (these need no model file: random weights in SmolLM2-135M's shape, whose forced runs cost what the
#      model's do; so this call alone measures the engine)
#   2. carry [".gpu/part2", ".gpu/data", ".gpu/tok"]: cp .gpu/part2/* /tmp/llma/ && source /tmp/llma/assemble.sh
#      && bash benchmarks/run_gpu_batch.sh COMMIT free
#   3. carry [".gpu/data", ".gpu/squad", ".gpu/tok"]: source /tmp/llma/assemble.sh && bash benchmarks/run_gpu_batch.sh COMMIT squad 7b
#      (`forced`: the model's own forced run, the same costs as forced135's)
# For `serve` (issue 23) also carry [".gpu/serve_whl"] once: cp .gpu/serve_whl/*.whl /tmp/llma/whl/
# STEPs: tests (the CUDA test of the fixed shapes; stops the run if it fails), steps
# (benchmarks.gpu_batch_steps), steps135 and forced135 (the same and rag forced at 1/16/64 on a random-weight
# SmolLM2-135M shape), free (rag free at 1/4/16/64: batched greedy and LLMA, each also in
# two groups in turn (--overlap), serial LLMA beside; without torch.compile to fit the call; FREE_ARGS
# replaces those options), forced,
# squad, 7b (the 7B-shaped random-weight Llama, forced, at 1/16), families (benchmarks.gpu_families:
# Gemma-3-4B and Qwen3-8B shapes, random weights, without torch.compile), serve (the server under 64
# clients for 5 minutes, then the Predicted Outputs benchmark; the server's static backend without
# torch.compile). Results and one log go to $OUT.
export LLMA_GIT_COMMIT=$1 LLMA_CACHE_DIR=/tmp/llmacache TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
shift
STEPS=${*:-tests steps free}
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
has() { [[ " $STEPS " == *" $1 "* ]]; }
SB="python3 -m benchmarks.serve_batch --max-new-tokens 128 --device cuda --dtype bfloat16 --warm-pass"
nvidia-smi --query-gpu=name --format=csv,noheader
python3 -c "import torch, transformers, triton; print(torch.__version__, transformers.__version__, triton.__version__)"
if has tests; then
  timeout 120 python3 -m pytest -q -x -p no:cacheprovider tests/llma/test_llma_batch_fixed.py -k cuda > /tmp/t.log 2>&1
  rc=$?; tail -25 /tmp/t.log; [[ $rc == 0 ]] || exit 1
fi
if has steps; then
  timeout 60 python3 -m benchmarks.gpu_batch_steps --blocks 1,16,64 --rows 1,8,32 --json "$OUT/gpu_batch_steps.json" \
    2>&1 | tee -a "$OUT/log.txt" | grep "^{'\|Error" | tail -30
fi
if has steps135; then
  timeout 90 python3 -m benchmarks.gpu_batch_steps --random 135m --blocks 1,16,64 --rows 1,8,32 \
    --json "$OUT/gpu_batch_steps_135m.json" 2>&1 | tee -a "$OUT/log.txt" | grep "^{'\|Error" | tail -30
fi
if has forced135; then
  timeout 220 $SB --data .gpu/data/rag.jsonl --mode forced --random 135m --tokenizer .gpu/tok --limit 64 \
    --concurrency 1,16,64 --slots 64 --overlap --json "$OUT/serve_batch_gpu_135m_forced.json" 2>&1 | tee -a "$OUT/log.txt" \
    | grep "^{'\|Error" | tail -12
fi
if has free; then
  LLMA_STATIC_COMPILE=0 timeout 330 $SB --data .gpu/data/rag.jsonl --limit 64 --slots 64 ${FREE_ARGS:---concurrency 1,4,16,64 --serial --overlap} \
    --json "$OUT/serve_batch_gpu.json" 2>&1 | tee -a "$OUT/log.txt" | grep "^{'\|Error" | tail -12
fi
if has forced; then
  timeout 170 $SB --data .gpu/data/rag.jsonl --mode forced --limit 64 --concurrency 1,16,64 --slots 64 \
    --json "$OUT/serve_batch_gpu_forced.json" 2>&1 | tee -a "$OUT/log.txt" | grep "^{'\|Error" | tail -12
fi
if has squad; then
  timeout 150 $SB --data .gpu/squad/dev-v1.1.json --limit 64 --concurrency 1,16,64 --slots 64 \
    --json "$OUT/serve_batch_gpu_squad.json" 2>&1 | tee -a "$OUT/log.txt" | grep "^{'\|Error" | tail -12
fi
if has 7b; then
  timeout 200 $SB --data .gpu/data/rag.jsonl --mode forced --random 7b --tokenizer .gpu/tok --limit 16 --concurrency 1,16 --slots 16 \
    --json "$OUT/serve_batch_gpu_7b_forced.json" 2>&1 | tee -a "$OUT/log.txt" | grep "^{'\|Error" | tail -12
fi
if has families; then
  LLMA_STATIC_COMPILE=0 timeout 330 python3 -m benchmarks.gpu_families --data .gpu/data/rag.jsonl --out "$OUT" \
    --tokenizer .gpu/tok --hf-prompts 1 2>&1 | tee -a "$OUT/log.txt" | grep -v "^Loading\|it/s\]" | tail -40
fi
if has serve; then
  export LLMA_STATIC_COMPILE=0
  timeout 400 python3 -m benchmarks.serve_load --device cuda --clients 64 --minutes 5 --prompts 24 \
    --data .gpu/data/rag.jsonl --out "$OUT/serve_load_gpu.json" 2>&1 | tee -a "$OUT/log.txt" | tail -15
  timeout 150 python3 -m benchmarks.predicted_outputs --device cuda --data .gpu/data/cnndm.jsonl --articles 4 \
    --max-tokens 128 --out "$OUT/predicted_outputs_gpu.json" 2>&1 | tee -a "$OUT/log.txt" | tail -15
fi
exit 0
