"""What a step with several rows (drafts verified side by side) costs on the GPU, and where it goes.

    PYTHONPATH=. python3 benchmarks/gpu_rows_profile.py --json $OUT/gpu_rows_profile.json

A SmolLM2-135M-shaped Llama with random weights in bf16 (no model file needed), the static backend as
`python -m llma.bench` runs it on the GPU (CUDA graphs, split-KV attention, torch.compile), 8,192-token
context, one 32-slot block per row at position ~1,000. Per row count: the replayed step's median wall
time, and its kernels by kind (split-KV attention, matrix products, the rest) from the profiler.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from benchmarks.gpu_profile import DEV, SMOL, kernel_times
from llma.bench_report import commit
from llma.gpu_bench import block_runner, random_llama, timed
from llma.static import StaticBackend



def kind(name: str) -> str:
    if "_partial" in name or "_combine" in name:
        return "attention (split-KV)"
    if any(m in name.lower() for m in ("gemm", "sm90", "cutlass", "nvjet", "ampere", "addmm", "mm_")):
        return "matrix products"
    return "other"


def breakdown(run) -> dict:
    rows = kernel_times(run)
    kinds: dict[str, float] = {}
    for key, _, us in rows:
        kinds[kind(key)] = kinds.get(kind(key), 0.0) + us
    return {"gpu_us_by_kind": {k: round(v, 1) for k, v in kinds.items()},
            "gpu_us_total": round(sum(kinds.values()), 1),
            "top": [(key[:80], n, round(us, 1)) for key, n, us in rows[:12]]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--rows", default="1,2,4,8,16")
    args = ap.parse_args()
    report: dict = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                    "command": "python3 benchmarks/gpu_rows_profile.py --json ... --rows " + args.rows,
                    "commit": commit(), "rows": {}}
    model = random_llama(SMOL, 49152, DEV, torch.bfloat16).model
    for rows in (int(r) for r in args.rows.split(",")):
        backend = StaticBackend(model, graphs=True, attention="split", compile=True, rows=rows)
        run = block_runner(backend, 32, 1056)
        report["rows"][rows] = {"step_ms": timed(run, DEV, reps=50), **breakdown(run)}
        print(rows, json.dumps(report["rows"][rows]), flush=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        del backend, run
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
