"""Every prompt's output tokens and forward passes with the engine as a user gets it, for greedy and
LLMA, free and forced; or the comparison of two such dumps (is a change token-for-token lossless
against the code before it, on the same machine?).

    python -m benchmarks.outputs dump --data ../shared/data/llma-rag/rag.jsonl --limit 100 \
        --device cuda --json /tmp/after.json
    python -m benchmarks.outputs compare /tmp/before.json /tmp/after.json

`dump` also runs from an older tree (PYTHONPATH=OLD python OLD_OR_NEW/benchmarks/outputs.py dump ...):
it finds the prompt builder where that tree keeps it. No environment variable changes the engine.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch


def _bench_prompts():  # noqa: ANN202 (the prompt builder, where the tree at hand keeps it)
    try:
        from benchmarks.data import bench_prompts
    except ImportError:  # a tree from before the benchmarks package
        from llma.bench_data import bench_prompts
    return bench_prompts


def dump(args: argparse.Namespace) -> dict[str, object]:
    import llma
    from llma import Engine, ForcedVerifier, LLMAConfig, load_model

    loaded = load_model(device=args.device)
    engine = Engine(loaded)
    engine.warm_up()
    _, prompts = _bench_prompts()(loaded.tokenizer, Path(args.data), args.limit)
    # No repetition stop: the outputs compare with earlier dumps and with HF greedy token for token.
    config = LLMAConfig(max_new_tokens=args.max_new_tokens, repetition_stop=False)
    runs: dict[str, list[dict[str, object]]] = {}
    started = time.perf_counter()
    for mode in ("free", "forced"):
        for method, cfg in (("greedy", config.greedy()), ("llma", config)):
            rows = []
            for p in prompts:
                verifier = None
                run_cfg = cfg
                if mode == "forced":
                    target = p.target[: args.max_new_tokens]
                    verifier = ForcedVerifier(target)
                    run_cfg = replace(cfg, max_new_tokens=len(target))
                result = engine.generate(p.prompt, p.references, run_cfg, verifier)
                rows.append({"tokens": result.tokens, "forwards": result.stats.forward_passes})
            runs[f"{mode}/{method}"] = rows
    return {"llma": llma.__file__, "backend": engine.backend.name, "device": str(loaded.device), "dtype": str(loaded.dtype),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "prompts": len(prompts), "max_new_tokens": args.max_new_tokens, "commit": args.commit,
            "seconds": round(time.perf_counter() - started, 1), "runs": runs}


def compare(before: dict[str, object], after: dict[str, object]) -> tuple[list[str], bool]:
    """One line per run (identical outputs and forward counts, the first prompt that differs) and
    whether everything is identical."""
    lines = [f"before: {before['commit']} ({before['backend']}), after: {after['commit']} ({after['backend']})"]
    same = before["runs"].keys() == after["runs"].keys()
    for name, old in before["runs"].items():
        new = after["runs"].get(name, [])
        same_tokens = sum(a["tokens"] == b["tokens"] for a, b in zip(old, new))
        same_forwards = sum(a["forwards"] == b["forwards"] for a, b in zip(old, new))
        first = next((i for i, (a, b) in enumerate(zip(old, new)) if a != b), None)
        same = same and len(old) == len(new) and first is None
        where = "" if first is None else f"; first difference: prompt {first}"
        lines.append(f"{name}: {same_tokens}/{len(old)} identical outputs, {same_forwards}/{len(old)} "
                     f"identical forward counts{where}")
    return lines, same


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.outputs", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    d = sub.add_parser("dump")
    d.add_argument("--data", required=True)
    d.add_argument("--limit", type=int, default=100)
    d.add_argument("--max-new-tokens", type=int, default=128)
    d.add_argument("--device", default="auto")
    d.add_argument("--commit", default="unknown", help="the commit of the tree that runs (for the record)")
    d.add_argument("--json", required=True)
    c = sub.add_parser("compare")
    c.add_argument("before")
    c.add_argument("after")
    args = ap.parse_args(argv)
    if args.command == "dump":
        found = dump(args)
        Path(args.json).write_text(json.dumps(found))
        print(f"{found['llma']}: {found['backend']} on {found['gpu'] or found['device']}: "
              f"{found['prompts']} prompts in {found['seconds']} s -> {args.json}")
        return 0
    lines, same = compare(json.loads(Path(args.before).read_text()), json.loads(Path(args.after).read_text()))
    print("\n".join(lines))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
