"""The static backend's prefill on the GPU, eager ops against torch.compile'd ones, both in CUDA graphs.

    python -m benchmarks.gpu_prefill --data .gpu/data/rag.jsonl --json $OUT/gpu_prefill.json
    (on the GPU machine)

Why: greedy and LLMA pay the same prefill per prompt, so it weighs more in LLMA's time (3.2-3.5x
fewer forwards): ~4 ms against ~1.3 ms per step on rag.jsonl (benchmarks/GPU.md, "Targets").
For each variant (StaticBackend with split-KV attention and 4 drafts packed, the CUDA default,
with `compile` off or on): every prompt prefilled once untimed (each padded length's graph
captured, torch.compile run), then `--passes` timed passes over the prompts, each prefill timed
from the host to its first token on the host (the argmax read back). Also each variant's GPU
kernels per prefill (torch.profiler, one prompt of median length), and how far the compiled
prefill's logits are from the eager one's (bf16: rounding differs; greedy and LLMA share the
prefill, so their identity is not at stake). Writes the JSON and a markdown table beside it (.md).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.autograd import DeviceType

from benchmarks.data import bench_prompts
from benchmarks.report import commit, write_report
from llma.loading import load_model
from llma.static.backend import StaticBackend
from llma.static.graphs import graph_length


def first_token_ms(backend: StaticBackend, prompt: list[int]) -> tuple[float, torch.Tensor]:
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    logits = backend.prefill(prompt)
    logits.argmax().item()
    return (time.perf_counter() - t0) * 1e3, logits


def kernels(backend: StaticBackend, prompt: list[int]) -> tuple[int, float]:
    """GPU kernels in one prefill and their summed time (us)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        backend.prefill(prompt)
        torch.cuda.synchronize()
    events = [e for e in prof.events() if e.device_type == DeviceType.CUDA and "Memcpy" not in e.name]
    return len(events), sum(e.device_time for e in events)


def markdown(report: dict) -> str:
    lines = [f"# The static backend's prefill on the GPU ({report['device']}, {report['dtype']}), "
             f"{report['prompts']} rag.jsonl prompts", "", f"Command: `{report['command']}` (commit "
             f"{report.get('commit') or 'not recorded'}, torch {report['torch']}). Prompts: "
             f"{report['prompt_tokens_mean']} tokens on average, {report['padded_tokens_mean']} padded.", "",
             "| prefill | ms per prefill (mean) | median | GPU kernels | kernel ms | "
             "set-up s (captures, compile) |",
             "|---|---|---|---|---|---|"]
    for name, v in report["variants"].items():
        lines.append(f"| {name} | {v['ms_per_prefill_mean']} | {v['ms_per_prefill_median']} | "
                     f"{v['kernels_per_prefill']} | {v['kernel_ms_per_prefill']} | {v['setup_s']} |")
    diff = report["compiled_vs_eager"]
    lines += ["", f"Compiled: {report['compiled_speedup']}x faster. Kernels profiled on one prompt of "
              f"{report['variants']['compiled']['profiled_prompt_tokens']} tokens. Against the eager "
              f"prefill's logits: max abs difference {diff['max_abs_logit_diff']}, the same first token on "
              f"{diff['same_first_token']} of {report['prompts']} prompts (bf16 rounding; greedy and LLMA "
              "share the prefill).", ""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--prompts", type=int, default=100)
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    loaded = load_model(device="cuda")
    _, prompts = bench_prompts(loaded.tokenizer, args.data, args.prompts)
    ids = [p.prompt for p in prompts]
    median = sorted(ids, key=len)[len(ids) // 2]
    report: dict[str, object] = {
        "command": "python -m benchmarks.gpu_prefill " + " ".join(sys.argv[1:]),
        "device": torch.cuda.get_device_name(), "dtype": str(loaded.dtype), "prompts": len(ids),
        "prompt_tokens_mean": round(statistics.mean(map(len, ids)), 1),
        "padded_tokens_mean": round(statistics.mean(graph_length(len(i), 10**6) for i in ids), 1),
        "torch": torch.__version__, "commit": commit(), "variants": {},
    }
    first: dict[str, list[torch.Tensor]] = {}
    for name, compile in (("eager ops", False), ("compiled", True)):
        backend = StaticBackend(loaded.model, attention="split", compile=compile, packed_drafts=4)
        t0 = time.perf_counter()
        first[name] = [first_token_ms(backend, i)[1] for i in ids]  # captures and compiles: untimed
        setup = time.perf_counter() - t0
        times = [first_token_ms(backend, i)[0] for _ in range(args.passes) for i in ids]
        count, gpu_us = kernels(backend, median)
        report["variants"][name] = {
            "ms_per_prefill_mean": round(statistics.mean(times), 3),
            "ms_per_prefill_median": round(statistics.median(times), 3),
            "setup_s": round(setup, 1), "kernels_per_prefill": count,
            "kernel_ms_per_prefill": round(gpu_us / 1e3, 3), "profiled_prompt_tokens": len(median),
            "attention": backend.attention,
        }
        print(name, report["variants"][name], flush=True)
        del backend
        torch.cuda.empty_cache()
    eager = first["eager ops"]
    compiled = first["compiled"]
    report["compiled_vs_eager"] = {
        "max_abs_logit_diff": round(max((a - b).abs().max().item() for a, b in zip(eager, compiled)), 4),
        "same_first_token": sum(int(a.argmax() == b.argmax()) for a, b in zip(eager, compiled)),
    }
    speed = report["variants"]["eager ops"]["ms_per_prefill_mean"] / report["variants"]["compiled"][
        "ms_per_prefill_mean"]
    report["compiled_speedup"] = round(speed, 3)
    print(json.dumps(report, indent=2))
    if args.json:
        write_report(args.json, report, markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
