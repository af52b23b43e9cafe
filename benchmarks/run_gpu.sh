#!/usr/bin/env bash
# Issue #3's GPU proof (results: benchmarks/GPU.md). On the device machine, after staging the model
# (../shared/gpu/README.md) and copying the data sets into .gpu/data (rag.jsonl, dev-v1.1.json):
#   cp .gpu/part2/* /tmp/llma/ && source /tmp/llma/assemble.sh && bash benchmarks/run_gpu.sh [STEP...]
# STEPs (default: all, in this order): smoke choose forced free squad steps host prefill history. Five
# device calls fit the 600 s limit: `smoke choose forced`, `free squad`, `steps host`, `prefill`,
# `history` (the choice waits in /tmp between; `host`: benchmarks.gpu_host_profile with 4 drafts
# packed, printed to its own file; `prefill`: benchmarks.gpu_prefill, the prefill eager and
# compiled; `history`: the user's defaults with and without llma.history, forced and free).
# Each bench stops taking new prompts after its --time-budget (every method keeps the same prompts);
# the HF methods (eager, ~20 tok/s there) and the eager static ones (name@static) run on the first
# --hf-limit / --also-limit prompts only (speed ratios compare the same prompts).
set -o pipefail
OUT=${OUT:-/tmp/gpu_out}
DATA=${DATA:-.gpu/data}
RES=/tmp/gpu_res
STEPS=${*:-smoke choose forced free squad steps host prefill history}
mkdir -p "$OUT" "$RES"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export LLMA_CACHE_DIR=${LLMA_CACHE_DIR:-/tmp/llmacache}
BENCH="python3 -m benchmarks.decode --device cuda --backend static-graphs --also-backend static"
BENCH="$BENCH --max-new-tokens 128"
# llma: the static backend's drafting defaults (llma.engine.fixed_block_defaults); llma_hf_defaults:
# the HF loop's (the defaults before stop 11); llma_k32: the best variant of the runs before that.
# (Until stop 11 also --variant llma_hf_defaults:min_n=2,k=8,adaptive=true,policy=recent and
#  llma_k32:min_n=1,k=32,adaptive=false,policy=recent: benchmarks/gpu_881f814/, GPU.md.)
# greedy+treeN / llma+treeN: N drafts packed into the one block per step (greedy runs the same packed
# kernels); N/B: in a block of B rows. (At f357927 also --rows 4 --rows 8 --rows 16, N drafts side by
# side: benchmarks/gpu_f357927/, GPU.md.)
BENCH="$BENCH --tree 4 --tree 8 --tree 9/64"
# The reports name the commit from the copy's .git, which lagged the tree once (stop 20): send the command
# with LLMA_GIT_COMMIT=<git rev-parse --short HEAD, made here> before it.
[[ -n "${LLMA_GIT_COMMIT:-}" ]] \
  || echo "WARNING: LLMA_GIT_COMMIT unset: the reports take the commit from the copy's .git"
keep() { cp $RES/*.json "$OUT"/ 2>/dev/null; }  # each result back at once (at most 8 files come back)
has() { [[ " $STEPS " == *" $1 "* ]]; }
{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv
  python3 -c "import torch, transformers, triton; print('torch', torch.__version__, 'transformers',
              transformers.__version__, 'triton', triton.__version__)"
  if has smoke; then  # the static backend's tests, the CUDA ones included (stop at once if one fails)
    SMOKE="cuda or bit_identical or backend_choice or upload or options or compile or warm_up"
    timeout 200 python3 -m pytest -q -x \
      tests/llma/test_llma_static.py tests/llma/test_llma_split_attention.py \
      tests/llma/test_llma_static_rows.py tests/llma/test_llma_static_tree.py \
      tests/llma/test_llma_static_compile.py tests/llma/test_llma_engine.py tests/llma/test_llma_history.py \
      tests/llma/test_llma_options.py \
      -k "$SMOKE or (history and not smollm)" || { echo "SMOKE TEST FAILED"; exit 1; }
  fi
  if has choose; then  # attention kernel and torch.compile: the fastest variant still bitwise row-invariant
    timeout 300 python3 -m benchmarks.gpu_steps --choose --data $DATA/rag.jsonl --json $RES/gpu_choice.json \
      | tee /dev/stderr | grep '^CHOICE' | tail -1 > $RES/choice.txt; keep
  fi
  # The benches' own engines (greedy, llma, name@static) without drafts packed: their greedy, the
  # fastest one, is every table's baseline. The default on CUDA (4 packed, llma.static.support) is
  # llma+tree4 in the tables, against that greedy and its own. (The smoke tests above run with the
  # defaults a user gets.)
  export LLMA_STATIC_TREE=0
  CHOICE=$(cat $RES/choice.txt 2>/dev/null)
  export LLMA_STATIC_ATTENTION=$(echo "$CHOICE" | sed -n 's/.*attention=\([a-z]*\).*/\1/p')
  export LLMA_STATIC_COMPILE=$(echo "$CHOICE" | sed -n 's/.*compile=\([01]\).*/\1/p')
  if [[ -z "$LLMA_STATIC_ATTENTION" ]]; then  # no choice on this machine (it went cold): the one every
    # run since 93cc97d made (stop 17 once timed `steps` with SDPA, the old fallback, by mistake)
    LLMA_STATIC_ATTENTION=split LLMA_STATIC_COMPILE=1
    echo "no kernel choice in $RES/choice.txt: the one made at 93cc97d"
  fi
  export LLMA_STATIC_ATTENTION LLMA_STATIC_COMPILE
  echo "using LLMA_STATIC_ATTENTION=$LLMA_STATIC_ATTENTION LLMA_STATIC_COMPILE=$LLMA_STATIC_COMPILE"
  if has forced; then
    timeout 300 $BENCH --data $DATA/rag.jsonl --mode forced --limit 100 --hf-limit 3 --also-limit 10 \
      --time-budget 160 --json $RES/gpu_rag_forced.json; keep
  fi
  if has free; then
    timeout 290 $BENCH --data $DATA/rag.jsonl --mode free --limit 100 --hf-limit 3 --also-limit 10 \
      --time-budget 150 --json $RES/gpu_rag_free.json; keep
  fi
  if has squad; then
    timeout 260 $BENCH --data $DATA/dev-v1.1.json --mode free --limit 100 --hf-limit 5 --also-limit 30 \
      --time-budget 120 --json $RES/gpu_squad.json; keep
  fi
  if has steps; then  # the probe and the step sweeps with the chosen kernel, without torch.compile
    LLMA_STATIC_COMPILE=0 timeout 150 python3 -m benchmarks.gpu_steps --data $DATA/rag.jsonl \
      --json $RES/gpu_steps.json --attention "$LLMA_STATIC_ATTENTION" --prompts 10 --sizes 1,2,4,8,16,32,64 \
      --tree 4,8; keep
  fi
  if has host; then
    timeout 200 python3 -m benchmarks.gpu_host_profile --data $DATA/rag.jsonl --tree 4 \
      > "$OUT/gpu_host_profile_tree4.txt"
  fi
  if has prefill; then
    timeout 250 python3 -m benchmarks.gpu_prefill --data $DATA/rag.jsonl --json $RES/gpu_prefill.json; keep
  fi
  if has history; then  # the defaults a user gets (no LLMA_STATIC_*), with and without the answer history
    for mode in forced free; do
      env -u LLMA_STATIC_TREE -u LLMA_STATIC_ATTENTION -u LLMA_STATIC_COMPILE timeout 280 \
        python3 -m benchmarks.decode --device cuda --backend auto --data $DATA/rag.jsonl --mode $mode \
        --limit 100 --hf-limit 1 --time-budget 100 --max-new-tokens 128 \
        --variant llma_no_history:answer_history=false --json $RES/gpu_history_$mode.json; keep
    done
  fi
} 2>&1 | tee -a "$OUT/log.txt"
exit 0
