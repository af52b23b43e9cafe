"""Where LLMA's time goes beside the GPU steps in free decoding: greedy vs LLMA, one engine.

    python benchmarks/gpu_host_profile.py --data .gpu/data/rag.jsonl [--tree N]   (on the GPU machine)

For 30 rag.jsonl prompts (free decoding, 128 new tokens, after an untimed prefill of each and a
warm-up): wall ms per forward, the mean time between step events (one forward plus the host's
work around it) and the time to the first token (the prefill), then a cProfile of the host side.
With --tree N, through a backend packing N drafts in its block. Printed only
(benchmarks/gpu_host_profile.txt is one run's output).
"""
from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from llma.bench_data import bench_prompts  # noqa: E402
from llma.engine import Engine, LLMAConfig  # noqa: E402
from llma.loading import load_model  # noqa: E402
from llma.static import select_backend  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--prompts", type=int, default=30)
    ap.add_argument("--tree", type=int, default=0, help="drafts packed per block (StaticBackend's tree)")
    args = ap.parse_args()
    loaded = load_model(device="cuda")
    engine = Engine(loaded, backend=select_backend(loaded.model, "static-graphs", tree=args.tree))
    _, prompts = bench_prompts(loaded.tokenizer, args.data, args.prompts)
    configs = {"greedy": LLMAConfig(max_new_tokens=128).greedy(), "llma": LLMAConfig(max_new_tokens=128)}
    for p in prompts:  # every prefill graph captured here, untimed
        engine.backend.prefill(p.prompt)
    for config in configs.values():
        engine.generate(prompts[0].prompt, prompts[0].references, config)
    for name, config in configs.items():
        torch.cuda.synchronize()
        t0, forwards = time.perf_counter(), 0
        for p in prompts:
            forwards += engine.generate(p.prompt, p.references, config).stats.forward_passes
        torch.cuda.synchronize()
        wall = time.perf_counter() - t0
        steps, ttft = [], []
        for p in prompts[:10]:
            events = list(engine.stream(p.prompt, p.references, config))
            steps += [e.step_s for e in events[1:]]
            ttft.append(events[0].elapsed_s)
        print(f"{name}: {forwards} forwards, {wall * 1e3 / forwards:.3f} ms/forward; mean step_s "
              f"{sum(steps) / len(steps) * 1e3:.3f} ms; ttft {sum(ttft) / len(ttft) * 1e3:.2f} ms", flush=True)
        profile = cProfile.Profile()
        profile.enable()
        for p in prompts:
            engine.generate(p.prompt, p.references, config)
        profile.disable()
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(14)
        print(out.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
