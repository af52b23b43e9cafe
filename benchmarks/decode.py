"""Side-by-side decoding benchmark: HF greedy, HF prompt lookup, our greedy, our LLMA.

    python -m benchmarks.decode --data ../shared/data/llma-rag/rag.jsonl --mode free --limit 20 \
        --device cpu --json benchmarks/results/cpu_rag_free.json
    (GPU, issue #3: benchmarks/run_gpu.sh runs it with --backend static-graphs --also-backend static)

Every method decodes the same prompts in the same run; speed is reported as ratios to our greedy.
Identity is the share of prompts whose tokens equal our greedy's (and HF greedy's) token for token.
Writes JSON (`--json`) and a markdown table beside it (same name, .md).
"""
from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch
import transformers
from tqdm import tqdm

from benchmarks.data import BenchPrompt, bench_prompts
from benchmarks.report import MethodRun, commit, cpu_name, markdown, summarise, write_report
from benchmarks.runners import EngineRunner, Runner, hf_runner, setup, sync
from llma.engine import HF_DEFAULTS, Engine, LLMAConfig
from llma.loading import LoadedModel
from llma.reference_index import POLICIES
from llma.options import EngineOptions
from llma.static import select_backend

log = logging.getLogger(__name__)


def methods(loaded: LoadedModel, engine: Engine,
            args: argparse.Namespace) -> tuple[dict[str, Runner], list[Engine]]:
    """The runners by name, and the engines they use (for the warm-up)."""
    forced = args.mode == "forced"
    base = base_config(args)
    table: dict[str, Runner] = {
        "hf_greedy": hf_runner(loaded, args.max_new_tokens, forced),
        "greedy": EngineRunner(engine, base.greedy(), forced),
        "llma": EngineRunner(engine, base, forced),
    }
    # Forced mode: HF prompt lookup, like HF greedy, decodes freely to the target's length.
    table["hf_prompt_lookup"] = hf_runner(loaded, args.max_new_tokens, forced, lookup=args.k or HF_DEFAULTS.k)
    engines = [engine]
    for backend in args.also_backend:  # the same two methods through another backend: greedy@static, ...
        other = Engine(loaded, options=replace(engine.options, backend=backend))
        engines.append(other)
        table[f"greedy@{backend}"] = EngineRunner(other, base.greedy(), forced)
        table[f"llma@{backend}"] = EngineRunner(other, base, forced)
    # Several drafts per step: side by side (rows) or packed into the block (tree); greedy runs the same.
    for option, specs in (("rows", args.rows), ("tree", args.tree)):
        field = "cache_copies" if option == "rows" else "packed_drafts"
        for spec in specs:  # N, or N/B: N drafts in a query block of B rows (both greedy and LLMA)
            n, _, block = spec.partition("/")
            options = replace(engine.options, **{field: int(n)})
            sizes = {"block": int(block)} if block else {}  # N/B: a query block of B rows
            other = Engine(loaded, backend=select_backend(loaded.model, options, **sizes))
            engines.append(other)
            table[f"greedy+{option}{spec}"] = EngineRunner(other, base.greedy(), forced)
            table[f"llma+{option}{spec}"] = EngineRunner(other, base, forced)
    for spec in args.variant:
        name, _, settings = spec.partition(":")
        overrides = dict(kv.split("=") for kv in settings.split(",") if kv)
        config = replace(base, **{k: _typed(k, v) for k, v in overrides.items()})
        table[name] = EngineRunner(engine, config, forced)
    return table, engines


def base_config(args: argparse.Namespace) -> LLMAConfig:
    """The `llma` method's settings: what the command line sets, the engine's defaults for the rest;
    no repetition stop, so that every method decodes what HF greedy does (the same workload)."""
    return LLMAConfig(max_new_tokens=args.max_new_tokens, min_n=args.min_n, max_n=args.max_n, k=args.k,
                      adaptive=False if args.fixed_k else None, policy=args.policy, repetition_stop=False)


def _typed(name: str, value: str) -> object:
    """A --variant value as its LLMAConfig field's type."""
    if name in ("adaptive", "copy_from_output", "answer_history"):
        return value == "true"
    return value if name == "policy" else int(value)


def draft_settings(engine: Engine, config: LLMAConfig) -> dict[str, object]:
    """The drafting settings `config` runs with on `engine` (its None fields resolved)."""
    resolved = engine.resolve(config)
    return {name: getattr(resolved, name)
            for name in ("min_n", "max_n", "k", "adaptive", "k_max", "policy", "answer_history")}


def measure(runners: dict[str, Runner], prompts: list[BenchPrompt], device: torch.device,
            hf_limit: int | None = None, budget_s: float | None = None,
            also_limit: int | None = None, engines: Sequence[Engine] = ()) -> dict[str, MethodRun]:
    """`hf_limit`, `also_limit`: the HF methods (slow on a GPU) and the name@backend methods run on
    the first `hf_limit` (`also_limit`) prompts only. `engines`: every prompt is prefilled once
    through each that uses CUDA graphs, untimed, so that no method pays for a prefill graph's capture.
    `budget_s`: start no new prompt after this many seconds (every method keeps the same prompts)."""
    runs = {name: MethodRun() for name in runners}
    # Warm-up, untimed (allocations, kernel selection; CUDA graphs for the shortest and longest prompt).
    runners["hf_greedy"](min(prompts, key=lambda p: len(p.prompt)))
    for name, runner in runners.items():
        if not name.startswith("hf_"):
            for p in {len(p.prompt): p for p in (min(prompts, key=lambda p: len(p.prompt)),
                                                  max(prompts, key=lambda p: len(p.prompt)))}.values():
                runner(p)
    for engine in engines:
        for p in prompts if getattr(engine.backend, "graphs", False) else ():
            engine.backend.prefill(p.prompt)
    for runner in runners.values():  # no method may have seen a prompt's answer before it is timed
        if isinstance(runner, EngineRunner):
            runner.reset()
    start = time.perf_counter()
    for i, p in enumerate(tqdm(prompts, desc="prompts", unit="prompt")):
        if budget_s is not None and time.perf_counter() - start > budget_s:
            log.warning("time budget of %.0f s spent: stopping after %d prompts", budget_s, i)
            break
        for name, runner in runners.items():  # interleaved, so drift on the machine hits every method
            limit = hf_limit if name.startswith("hf_") else also_limit if "@" in name else None
            if limit is not None and i >= limit:
                continue
            sync(device)
            t0 = time.perf_counter()
            tokens, forwards, proposed, accepted = runner(p)
            sync(device)
            run = runs[name]
            run.times.append(time.perf_counter() - t0)
            if isinstance(runner, EngineRunner):
                run.first_token_s.append(runner.clock.seconds())
            run.wall_s += run.times[-1]
            run.outputs.append(tokens)
            run.forwards += forwards
            run.proposed += proposed
            run.accepted += accepted
    return runs


def _sizes(spec: str) -> str:
    """--rows/--tree: N or N/B, whole numbers (the backend checks their range)."""
    if not all(part.isdigit() for part in spec.split("/")) or spec.count("/") > 1:
        raise argparse.ArgumentTypeError(f"expected N or N/B (drafts, block rows), got {spec!r}")
    return spec


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.decode", description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="rag.jsonl (LLMA paper) or SQuAD dev json")
    ap.add_argument("--mode", choices=("free", "forced"), default="free")
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--device", default="auto", help="cpu, cuda or auto")
    ap.add_argument("--dtype", default=None, help="default: float32 on CPU, bfloat16 on CUDA")
    ap.add_argument("--model", default=None, help="default: the bundled SmolLM2-135M-Instruct")
    ap.add_argument("--json", type=Path, help="write the results here (and a .md table beside it)")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--max-passages", type=int, default=10)
    ap.add_argument("--refs", choices=("prompt", "alone"), default="prompt")
    ap.add_argument("--min-n", type=int, default=None,
                    help="default: the backend's (llma.engine.DraftDefaults)")
    ap.add_argument("--max-n", type=int, default=LLMAConfig.max_n)
    ap.add_argument("-k", type=int, default=None, help="default: the backend's")
    ap.add_argument("--fixed-k", action="store_true",
                    help="fixed copy length (default: the backend's choice)")
    ap.add_argument("--policy", default=None, choices=POLICIES, help="default: the backend's")
    ap.add_argument("--backend", default="auto", help="our greedy/llma: auto, hf, static, static-graphs")
    ap.add_argument("--also-backend", action="append", default=[], help="add greedy@B and llma@B")
    ap.add_argument("--rows", action="append", type=_sizes, default=[],
                    help="add greedy+rowsN and llma+rowsN: --backend with N drafts verified per step "
                         "(N/B: in query blocks of B rows)")
    ap.add_argument("--tree", action="append", type=_sizes, default=[],
                    help="add greedy+treeN and llma+treeN: --backend with N drafts packed in its block (N/B: "
                         "a block of B rows)")
    ap.add_argument("--hf-limit", type=int, default=None,
                    help="run the HF methods on the first N prompts only")
    ap.add_argument("--also-limit", type=int, default=None, help="run name@backend methods on N prompts only")
    ap.add_argument("--time-budget", type=float, default=None, help="seconds; then stop taking new prompts")
    ap.add_argument("--variant", action="append", default=[],
                    help="extra LLMA run, NAME:key=value,... e.g. fixed8:adaptive=false,k=8")
    args = ap.parse_args(argv)
    if args.limit < 1 or args.max_new_tokens < 1:
        ap.error("--limit and --max-new-tokens must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    loaded = setup(args)
    # The environment is read here, at the edge: LLMA_STATIC_* choose the engine's kernels.
    engine = Engine(loaded, options=EngineOptions.from_env(os.environ, backend=args.backend))
    dataset, prompts = bench_prompts(loaded.tokenizer, args.data, args.limit, args.refs, args.max_passages)
    if args.mode == "forced" and not all(p.target for p in prompts):
        raise SystemExit(f"--mode forced needs targets (result.text) in {args.data}")
    cuda = loaded.device.type == "cuda"
    device_name = torch.cuda.get_device_name(loaded.device) if cuda else cpu_name()
    report = {
        "device": (f"{loaded.device.type} ({device_name}, {os.cpu_count()} cpus, "
                   f"{torch.get_num_threads()} threads)"),
        "dtype": str(loaded.dtype), "model": loaded.name, "dataset": dataset, "mode": args.mode,
        "n_prompts": len(prompts), "max_new_tokens": args.max_new_tokens, "refs": args.refs,
        "backend": getattr(engine.backend, "name", type(engine.backend).__name__), "hf_limit": args.hf_limit,
        "also_limit": args.also_limit, "llma_settings": draft_settings(engine, base_config(args)),
        "command": "python -m benchmarks.decode " + " ".join(sys.argv[1:] if argv is None else argv),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__},
        "commit": commit(),  # now, so that the printed table and the markdown name it as the JSON does
    }
    print(f"device: {report['device']}, dtype {report['dtype']}, {len(prompts)} prompts", flush=True)
    runners, engines = methods(loaded, engine, args)
    runs = measure(runners, prompts, loaded.device, args.hf_limit, args.time_budget, args.also_limit, engines)
    report["n_prompts"] = len(runs["greedy"].outputs)
    report["results"] = summarise(runs)
    print(markdown(report))
    if args.json:
        write_report(args.json, report, markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
