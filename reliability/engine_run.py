"""Long run of the accelerator alone: many generations on one `Engine`, on CPU or a GPU.

    python -m reliability.engine_run --prompts 500 --device cuda \
        --json benchmarks/results/reliability/engine_cuda.json

SQuAD questions with their paragraphs as references (as `python -m benchmarks.decode` builds them). Every
`--abandon-every`-th generation is dropped after a few steps, as a client that disconnects or a stop
string does. After each generation the KV cache length, the process RSS and, on CUDA, the GPU memory
allocated and reserved are recorded: a leak shows as growth over the second half of the run. The RAG
pipeline's own long run (retrieval, answer cache) is `python -m reliability.longrun`.
"""
from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm import tqdm

from reliability.longrun import MAX_GROWTH_MB, SQUAD, growth, percentile, prefixed
from reliability.report import REPORT_DIR, header, rss_mb, run_markdown, trim_heap, write_report

log = logging.getLogger(__name__)
ABANDON_AFTER_STEPS = 3


@dataclass
class Point:
    generation: int
    rss_mb: float
    kv_tokens: int
    held_tokens: int  # prompt + tokens produced: the most the KV cache may hold after it
    cuda_allocated_mb: float | None
    cuda_reserved_mb: float | None
    python_objects: int  # objects tracked by the garbage collector: a Python-level leak grows it


@dataclass
class EngineRun:
    points: list[Point] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    tokens: int = 0
    forwards: int = 0
    abandoned: int = 0
    seconds: list[float] = field(default_factory=list)


def _cuda() -> tuple[float | None, float | None]:
    import torch

    if not torch.cuda.is_available():
        return None, None
    return torch.cuda.memory_allocated() / 2**20, torch.cuda.memory_reserved() / 2**20


def _generate(engine: object, prompt: object, config: object, abandon: bool) -> tuple[int, int]:
    """(tokens produced, forward passes); an abandoned stream is closed after a few steps."""
    tokens = steps = 0
    events = engine.stream(prompt.prompt, prompt.references, config)  # type: ignore[attr-defined]
    try:
        for event in events:
            tokens += len(event.new_tokens)
            steps += 1
            if abandon and steps == ABANDON_AFTER_STEPS:
                break
    finally:
        events.close()
    return tokens, steps


def _point(n: int, kv: int, held: int, trim: bool) -> Point:
    gc.collect()
    if trim:
        trim_heap()
    return Point(n, rss_mb(), kv, held, *_cuda(), len(gc.get_objects()))


def run_engine(engine: object, prompts: Sequence[object], config: object, abandon_every: int = 10,
               progress: bool = False, trim: bool = False) -> EngineRun:
    run = EngineRun()
    run.points.append(_point(0, 0, 0, trim))
    for n, prompt in enumerate(tqdm(prompts, desc="generations", disable=not progress), start=1):
        abandon = abandon_every > 0 and n % abandon_every == 0
        started = time.perf_counter()
        try:
            tokens, steps = _generate(engine, prompt, config, abandon)
        except Exception as exc:  # every failure is reported, the run goes on
            log.exception("generation %d failed", n)
            run.failed.append(f"{n}: {type(exc).__name__}: {exc}")
            continue
        run.seconds.append(time.perf_counter() - started)
        run.tokens += tokens
        run.forwards += steps
        run.abandoned += abandon
        kv = int(getattr(engine.backend, "cached", 0))  # type: ignore[attr-defined]
        run.points.append(_point(n, kv, len(prompt.prompt) + tokens, trim))  # type: ignore[attr-defined]
    return run


def figures(run: EngineRun) -> dict[str, object]:
    points = run.points
    out: dict[str, object] = {
        "generations": len(points) - 1, "failed": len(run.failed), "abandoned": run.abandoned,
        "tokens": run.tokens, "tokens_per_forward": run.tokens / max(1, run.forwards),
        "tokens_per_s": run.tokens / max(1e-9, sum(run.seconds)),
        "generation_p50_s": percentile(run.seconds, 50), "generation_max_s": max(run.seconds, default=0.0),
        "kv_tokens_max": max(p.kv_tokens for p in points),
        "kv_tokens_beyond_held_max": max((p.kv_tokens - p.held_tokens for p in points[1:]), default=0),
        **prefixed("rss", growth([(p.generation, p.rss_mb) for p in points])),
        "python_objects_after_warmup": points[len(points) // 10].python_objects,
        "python_objects_end": points[-1].python_objects}
    for name in ("cuda_allocated", "cuda_reserved"):
        values = [(p.generation, getattr(p, name + "_mb")) for p in points
                  if getattr(p, name + "_mb") is not None]
        if values:
            out.update(prefixed(name, growth(values)))
    return out


def verdict(run: EngineRun, found: dict[str, object]) -> str:
    grew = [k for k, v in found.items()
            if k.endswith("second_half_growth_mb") and float(v) > MAX_GROWTH_MB]  # type: ignore[arg-type]
    beyond = int(found["kv_tokens_beyond_held_max"])  # type: ignore[call-overload]
    ok = not run.failed and not grew and beyond <= 0
    return "PASS" if ok else f"FAIL (failed={len(run.failed)}, grew={grew})"


def markdown(report: dict[str, object]) -> str:
    found = report["figures"]
    assert isinstance(found, dict)
    return run_markdown(f"Engine long run: {found['generations']} generations on {report['device']}",
                        f"{report['machine']}, {report['gpu']}, backend {report['backend']}", report)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m reliability.engine_run", description=__doc__.splitlines()[0])
    p.add_argument("--prompts", type=int, default=500)
    p.add_argument("--data", type=Path, default=SQUAD)
    p.add_argument("--device", default="auto")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--abandon-every", type=int, default=10)
    p.add_argument("--same-prompt", action="store_true", help="ask the first prompt every time (one shape)")
    p.add_argument("--malloc-trim", action="store_true",
                   help="return freed heap to the OS before each RSS reading")
    p.add_argument("--json", type=Path, default=REPORT_DIR / "engine_run.json")
    args = p.parse_args(argv)
    # Taken first: the commit and date the run started from, even if HEAD moves while it runs.
    head = header("python -m reliability.engine_run " + " ".join(argv if argv is not None else sys.argv[1:]))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from benchmarks.data import bench_prompts
    from llma import Engine, EngineOptions, LLMAConfig, load_model

    loaded = load_model(device=args.device)
    engine = Engine(loaded, options=EngineOptions.from_env(os.environ))
    _, prompts = bench_prompts(loaded.tokenizer, args.data, 1 if args.same_prompt else args.prompts)
    prompts = prompts * args.prompts if args.same_prompt else prompts
    run = run_engine(engine, prompts, LLMAConfig(max_new_tokens=args.max_new_tokens), args.abandon_every,
                     progress=True, trim=args.malloc_trim)
    found = figures(run)
    report = {**head,
              "device": str(loaded.device), "dtype": str(loaded.dtype),
              "backend": type(engine.backend).__name__,
              "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU",
              "torch": torch.__version__, "figures": found, "verdict": verdict(run, found),
              "failures": run.failed[:20], "points": [asdict(pt) for pt in run.points]}
    write_report(args.json, report, markdown(report))
    print(markdown(report))
    return 0 if report["verdict"] == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
