"""A fresh process's first answers on CUDA with the user's defaults: `Engine.warm_up`, then answers.

    python -m benchmarks.gpu_first_answer --data .gpu/data/rag.jsonl   (on the GPU machine; printed only)

Why: the backend captures a CUDA graph per padded prompt length on first use, and torch.compile
runs at the first step and the first prefill. This prints what `Engine.warm_up` costs and how long
the answers after it take: three rag.jsonl prompts of different padded lengths (median, shortest,
longest), then the median one again (nothing left to set up).
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from benchmarks.data import bench_prompts
from llma.engine import Engine, LLMAConfig
from llma.loading import load_model


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    loaded = load_model(device="cuda")
    _, prompts = bench_prompts(loaded.tokenizer, args.data, 100)
    engine = Engine(loaded)
    started = time.perf_counter()
    engine.warm_up()
    print(f"RESULT warm_up {time.perf_counter() - started:.2f} s", flush=True)
    by_length = sorted(prompts, key=lambda p: len(p.prompt))
    for p in (by_length[len(by_length) // 2], by_length[0], by_length[-1], by_length[len(by_length) // 2]):
        started = time.perf_counter()
        result = engine.generate(p.prompt, p.references, LLMAConfig(max_new_tokens=128))
        print(f"RESULT prompt {len(p.prompt)} tokens: answer {time.perf_counter() - started:.3f} s, "
              f"{len(result.tokens)} tokens", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
