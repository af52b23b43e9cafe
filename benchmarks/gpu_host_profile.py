"""Where LLMA's time goes beside the GPU steps: greedy vs LLMA, one engine, host and GPU kernels.

    python -m benchmarks.gpu_host_profile --data .gpu/data/rag.jsonl [--tree N] [--mode forced] [--kernels]
    (on the GPU machine)

For 30 rag.jsonl prompts (free decoding by default, 128 new tokens, after an untimed prefill of
each and a warm-up): wall ms per forward, the mean time between step events (one forward plus the
host's work around it) and the time to the first token (the prefill), then a cProfile of the host
side. With --tree N, through a backend packing N drafts in its block; --mode forced: forced to the
targets, as `benchmarks.decode --mode forced`; --kernels: also the GPU's time per forward by kernel
(torch.profiler over 10 prompts; kernels replayed in a CUDA graph count too). Printed only
(benchmarks/results/gpu_host_profile*.txt are runs' outputs).
"""
from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from torch.autograd import DeviceType

from benchmarks.data import BenchPrompt, bench_prompts
from llma.engine import Engine, LLMAConfig
from llma.loading import load_model
from llma.options import EngineOptions
from llma.types import DecodeResult
from llma.verifier import ForcedVerifier


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--prompts", type=int, default=30)
    ap.add_argument("--tree", type=int, default=0, help="drafts packed per block (StaticBackend's tree)")
    ap.add_argument("--mode", choices=("free", "forced"), default="free")
    ap.add_argument("--kernels", action="store_true", help="also the GPU time per forward by kernel")
    args = ap.parse_args()
    loaded = load_model(device="cuda")
    options = EngineOptions.from_env(os.environ, backend="static-graphs", packed_drafts=args.tree)
    engine = Engine(loaded, options=options)
    _, prompts = bench_prompts(loaded.tokenizer, args.data, args.prompts)
    configs = {"greedy": LLMAConfig(max_new_tokens=128).greedy(), "llma": LLMAConfig(max_new_tokens=128)}
    for p in prompts:  # every prefill graph captured here, untimed
        engine.backend.prefill(p.prompt)
    forced = args.mode == "forced"

    def generate(p: BenchPrompt, config: LLMAConfig) -> DecodeResult:
        if not forced:
            return engine.generate(p.prompt, p.references, config)
        target = p.target[: config.max_new_tokens]
        return engine.generate(p.prompt, p.references, replace(config, max_new_tokens=len(target)),
                               ForcedVerifier(target))

    for config in configs.values():
        generate(prompts[0], config)
    for name, config in configs.items():
        engine.history.clear()  # no prompt's own answer from an earlier pass
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        forwards = 0
        for p in prompts:
            forwards += generate(p, config).stats.forward_passes
        torch.cuda.synchronize()
        wall = time.perf_counter() - t0
        steps = []
        ttft = []
        for p in prompts[:10]:
            events = list(engine.stream(p.prompt, p.references, config))
            steps += [e.step_s for e in events[1:]]
            ttft.append(events[0].elapsed_s)
        print(f"{name} ({args.mode}): {forwards} forwards, {wall * 1e3 / forwards:.3f} ms/forward; "
              f"mean step_s {sum(steps) / len(steps) * 1e3:.3f} ms (free decoding); "
              f"ttft {sum(ttft) / len(ttft) * 1e3:.2f} ms", flush=True)
        profile = cProfile.Profile()
        profile.enable()
        for p in prompts:
            generate(p, config)
        profile.disable()
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(14)
        print(out.getvalue())
        if args.kernels:
            print(kernel_table(lambda: [generate(p, config) for p in prompts[:10]]), flush=True)
    return 0


def kernel_table(run: Callable[[], list[DecodeResult]]) -> str:
    """The GPU's time per forward by kernel over `run`'s decodings (torch.profiler, CUDA activity)."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        forwards = sum(result.stats.forward_passes for result in run())
        torch.cuda.synchronize()
    rows = [e for e in prof.key_averages()
            if e.device_type == DeviceType.CUDA and e.self_device_time_total > 0]
    rows.sort(key=lambda e: -e.self_device_time_total)
    total = sum(e.self_device_time_total for e in rows)
    lines = [f"GPU time by kernel over {forwards} forwards: {total / forwards:.1f} us per forward",
             "| us per forward | calls per forward | kernel |", "|---|---|---|"]
    lines += [f"| {e.self_device_time_total / forwards:.1f} | {e.count / forwards:.2f} | {e.key[:90]} |"
              for e in rows[:25]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
