"""What a step with several rows (drafts verified side by side) costs on the GPU, and where it goes.

    python -m benchmarks.gpu_rows_profile --json $OUT/gpu_rows_profile.json [--tree 4,8]

A SmolLM2-135M-shaped Llama with random weights in bf16 (no model file needed), the static backend as
`python -m benchmarks.decode` runs it on the GPU (CUDA graphs, split-KV attention, torch.compile), 8,192-token
context, one 32-slot block per row at position ~1,000. Per row count: the replayed step's median wall
time, and its kernels by kind (split-KV attention, matrix products, the rest) from the profiler.
With --tree, the same for N drafts packed into the one block (StaticBackend(packed_drafts=N)): a greedy step
(one draft) and a block full of drafts (each at its cap, llma.static.packing.draft_caps).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from benchmarks.gpu_profile import DEV, SMOL, kernel_times
from benchmarks.gpu_steps import block_runner, random_llama, timed
from benchmarks.report import commit
from llma.static import StaticBackend
from llma.static.cache import NO_MOVE
from llma.static.packing import draft_caps, pack, single


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


def tree_runner(backend: StaticBackend, pos: int, full: bool):
    """A replay of the packed step at `pos`: one draft filling the block, or every draft at its cap."""
    block = backend.block
    n = backend.packed_drafts
    caps = draft_caps(block, n)
    later = [[1] + [7 + i] * c for i, c in enumerate(caps[1:])]
    if full:
        packed = pack([[1] + [5] * (caps[0] - sum(caps[1:])), *later], block, n)
    else:
        packed = single([1] * block, block, n)
    length = backend.attention_length(pos + block)
    captured = backend.step_graph(backend.layout, length, pos)
    captured.inp.copy_(torch.tensor(backend.layout.flat(packed.ids, pos, packed.info(), NO_MOVE)))
    return captured.graph.replay


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--rows", default="1,2,4,8,16")
    ap.add_argument("--tree", default="", help="drafts packed per block, e.g. 4,8")
    args = ap.parse_args()
    report: dict = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                    "command": f"python -m benchmarks.gpu_rows_profile --json ... --rows {args.rows} "
                               f"--tree {args.tree}",
                    "commit": commit(), "rows": {}, "tree": {}}
    model = random_llama(SMOL, 49152, DEV, torch.bfloat16).model
    for n in (int(r) for r in args.tree.split(",") if r):
        backend = StaticBackend(model, graphs=True, attention="split", compile=True, packed_drafts=n)
        for full in (False, True):
            run = tree_runner(backend, 1024, full)
            report["tree"][f"{n} {'packed' if full else 'greedy'}"] = {"step_ms": timed(run, DEV, reps=50),
                                                                       **breakdown(run)}
            print(n, full, json.dumps(report["tree"][f"{n} {'packed' if full else 'greedy'}"]), flush=True)
        del backend
        torch.cuda.empty_cache()
    for rows in (int(r) for r in args.rows.split(",") if r):
        backend = StaticBackend(model, graphs=True, attention="split", compile=True, cache_copies=rows)
        run = block_runner(backend, 32, 1056)
        report["rows"][rows] = {"step_ms": timed(run, DEV, reps=50), **breakdown(run)}
        print(rows, json.dumps(report["rows"][rows]), flush=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        del backend, run
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
