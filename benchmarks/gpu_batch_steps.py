"""The batch engine's decoding step by shape: milliseconds per step for B requests x R rows, CUDA
graphs (llma.batch.graph_step) against the eager step (llma.batch.step), on the default model or a
random-weight one (`--random`: benchmarks.gpu_steps.random_llama, no model file needed).

    python -m benchmarks.gpu_batch_steps --device cuda --dtype bfloat16 --blocks 1,16,64 --rows 1,8,32
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from benchmarks.gpu_steps import RANDOM_SHAPES, random_llama
from benchmarks.report import commit, print_json
from benchmarks.runners import setup
from llma.batch.runner import BatchRunner
from llma.batch.step import Block
from llma.loading import resolve_dtype


def timed(run, device: torch.device, repeat: int) -> float:  # noqa: ANN001
    run()  # a first call captures (or compiles) the shape
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(repeat):
        run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / repeat


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--blocks", default="1,4,16,64")
    ap.add_argument("--rows", default="1,8,32")
    ap.add_argument("--position", type=int, default=1000, help="each request's cached tokens")
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--eager", action="store_true", help="also the eager step")
    ap.add_argument("--fixed", action="store_true", help="fixed shapes off CUDA too (Triton's interpreter)")
    ap.add_argument("--model", default=None)
    ap.add_argument("--random", choices=("7b", "135m"), default=None,
                    help="a random-weight Llama of this shape (vocabulary 49152) instead of the model: no model file")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.random:
        device = torch.device(args.device)
        loaded = random_llama(RANDOM_SHAPES[args.random], 49152, device, resolve_dtype(args.dtype, device))
    else:
        loaded = setup(args)
    blocks_list = [int(b) for b in args.blocks.split(",")]
    runner = BatchRunner(loaded.model, slots=max(blocks_list), max_len=args.position + 256,
                         fixed=True if args.fixed else None)
    length = runner.attention_length(args.position + 64)
    rows: list[dict[str, object]] = []
    for b in blocks_list:
        for r in (int(x) for x in args.rows.split(",")):
            slots = [runner.cache.acquire() for _ in range(b)]
            drafts = [[7] + [0] * (r - 1)] if r < 4 else [[7] + [0] * (r - 4), [7, 1], [7, 2], [7, 3]]
            blocks = [Block.packed(s, args.position, drafts, length)[0] for s in slots]
            row = {"blocks": b, "rows": r, "graph_ms": round(1e3 * timed(lambda: runner.run(blocks), loaded.device,
                                                                         args.repeat), 3)}
            if args.eager:
                row["eager_ms"] = round(1e3 * timed(lambda: runner.step(blocks), loaded.device, 3), 3)
            row["tokens_rows_per_ms"] = round(b * r / row["graph_ms"], 1)
            print(row, flush=True)
            rows.append(row)
            for s in slots:
                runner.cache.release(s)
    report = {"device": str(loaded.device) + (f" ({torch.cuda.get_device_name()})" if loaded.device.type == "cuda"
                                             else ""),
              "model": loaded.name, "dtype": str(loaded.dtype), "row_tile": runner.tile,
              "row_invariant": runner.invariant, "position": args.position, "commit": commit(),
              "command": "python -m benchmarks.gpu_batch_steps " + " ".join(sys.argv[1:] if argv is None else argv),
              "results": rows}
    print_json(report, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
