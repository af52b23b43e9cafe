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
from torch.profiler import ProfilerActivity, profile

from llma.bench_report import commit
from llma.gpu_bench import block_runner, random_llama, timed
from llma.static import StaticBackend

SMOL = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
            num_key_value_heads=3, max_position_embeddings=8192, tie_word_embeddings=True)
DEV = torch.device("cuda")


def kind(name: str) -> str:
    if "_partial" in name or "_combine" in name:
        return "attention (split-KV)"
    if any(m in name.lower() for m in ("gemm", "sm90", "cutlass", "nvjet", "ampere", "addmm", "mm_")):
        return "matrix products"
    return "other"


def breakdown(run, steps: int = 5) -> dict:
    run()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            run()
        torch.cuda.synchronize()
    kinds: dict[str, float] = {}
    top = []
    for e in prof.key_averages():
        if e.self_device_time_total > 0:
            us = e.self_device_time_total / steps
            kinds[kind(e.key)] = kinds.get(kind(e.key), 0.0) + us
            top.append((e.key[:80], e.count // steps, round(us, 1)))
    top.sort(key=lambda r: -r[2])
    return {"gpu_us_by_kind": {k: round(v, 1) for k, v in kinds.items()},
            "gpu_us_total": round(sum(kinds.values()), 1), "top": top[:12]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--rows", default="1,2,4,8,16")
    args = ap.parse_args()
    report: dict = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                    "command": "python3 benchmarks/gpu_rows_profile.py --json ... --rows " + args.rows, "commit": commit(),
                    "rows": {}}
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
