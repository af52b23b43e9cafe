"""The CPU batch engine's prompt cost by weights and prompt dtype, on this machine: a prompt's
prefill (in the scheduler's 256-token chunks), the same prompt restored from stored chunks but its
last chunk (a chat's next turn, llma.batch.prefix), and a decoding step of 8 one-row blocks.

    python -m benchmarks.cpu_prefill --tokens 1024 --json benchmarks/results/cpu_prefill.json

Each figure is the faster of `--repeat` timed runs after one untimed run.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks.report import commit, cpu_name, print_json, write_report
from benchmarks.runners import setup
from llma.batch.prefix import PrefixStore
from llma.batch.runner import PREFILL_CHUNK, BatchRunner
from llma.batch.step import Block
from llma.cpu.weights import default_prompt_dtype

SETTINGS = (("int4", "bfloat16"), ("int4", "float32"), ("full", None))  # (weights, prompt dtype)


def best_of(fn: Callable[[], object], repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def prefill(runner: BatchRunner, slot: int, ids: list[int], start: int = 0) -> None:
    """`ids` into `slot` from position `start` in PREFILL_CHUNK-token steps, the last one's logits out."""
    length = runner.attention_length(len(ids) + 64)
    for pos in range(start, len(ids), PREFILL_CHUNK):
        chunk = ids[pos : pos + PREFILL_CHUNK]
        runner.run([Block.chunk(slot, pos, chunk, length, last=pos + len(chunk) == len(ids))])


def measure(runner: BatchRunner, tokens: int, repeat: int) -> dict[str, float]:
    slot = runner.cache.acquire()
    ids = [100 + (i * 7919) % 40000 for i in range(tokens)]
    whole = best_of(lambda: prefill(runner, slot, ids), repeat)
    store = PrefixStore(runner.cache, PREFILL_CHUNK, 1 << 40)
    for end in range(PREFILL_CHUNK, tokens + 1, PREFILL_CHUNK):
        store.save(slot, ids, end)
    other = runner.cache.acquire()

    def next_turn() -> None:
        prefill(runner, other, ids, store.restore(other, ids))

    reused = best_of(next_turn, repeat)
    length = runner.attention_length(tokens + 64)
    blocks = [Block.packed(slot, tokens, [[5]], length)[0] for _ in range(8)]
    step = best_of(lambda: runner.run(blocks), 3 * repeat)
    return {"prefill_s": round(whole, 3), "restored_prefill_s": round(reused, 3),
            "restored_tokens": store.restore(other, ids), "step_8_rows_ms": round(step * 1e3, 1)}


def table(report: dict) -> str:
    lines = [f"# CPU batch engine: prompt cost by weights and prompt dtype ({report['tokens']} tokens)", "",
             f"Device: {report['device']}; default prompt dtype here: {report['default_prompt_dtype']}.", "",
             "| weights | prompt products | prefill | next turn (stored chunks restored) | step of 8 one-row blocks |",
             "|---|---|---|---|---|"]
    for r in report["results"]:
        lines.append(f"| {r['weights']} | {r['prompt_dtype'] or 'fp32 (the model)'} | {r['prefill_s']} s | "
                     f"{r['restored_prefill_s']} s ({r['restored_tokens']} restored) | {r['step_8_rows_ms']} ms |")
    lines += ["", f"Commit {report.get('commit') or 'not recorded'}. Command: `{report['command']}`"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    loaded = setup(argparse.Namespace(threads=0, model=None, device="cpu", dtype=None))
    results = []
    for weights, dtype in SETTINGS:
        runner = BatchRunner(loaded.model, slots=2, weights=weights, glue=weights == "int4", prompt_dtype=dtype)
        results.append({"weights": weights, "prompt_dtype": dtype, **measure(runner, args.tokens, args.repeat)})
        print(results[-1], flush=True)
        del runner
    report = {"device": f"cpu ({cpu_name()}, {os.cpu_count()} cpus, {torch.get_num_threads()} threads)",
              "model": loaded.name, "tokens": args.tokens, "default_prompt_dtype": default_prompt_dtype(),
              "results": results, "commit": commit(), "command": "python -m benchmarks.cpu_prefill " + " ".join(sys.argv[1:])}
    print_json(report, None)
    if args.json:
        write_report(args.json, report, table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
