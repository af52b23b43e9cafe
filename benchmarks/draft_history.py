"""Drafts from earlier answers' next tokens (llma.history), counted without a model on rag.jsonl.

    python -m benchmarks.draft_history --data ../shared/data/llma-rag/rag.jsonl --free \
        --json benchmarks/results/draft_history.json

Why: half of LLMA's steps on (a) accept nothing, mostly where the answer starts a new copy
(draft_rules.md). `Proposer(history=...)` fills the drafts that the index leaves unused with a
copy that starts at the token earlier answers most often wrote after the output's last token.
This counts tokens per forward through the real `Proposer` (drafts, `near`, the history's growth
answer by answer, in the data set's order, from empty), each step keeping the drafts' longest
accepted prefix plus the next token:
- forced: the outputs are the data set's targets (result.text);
- free (`--free`): the outputs are SmolLM2's own greedy answers, generated here on the CPU in
  fp32 (LLMA is lossless, so free decoding's steps are forced decoding to these).
Settings: the static backend's (min_n 1, k 31, "longest"), 1 draft per step (31 tokens) and 4
packed into a 32-row block (llma.static.packing.draft_caps, the CUDA default).
"""
from __future__ import annotations

import platform
import sys
import time
from pathlib import Path

from benchmarks.data import BenchPrompt, bench_prompts
from benchmarks.forced_count import forced_parser, write_report
from llma.engine import OUTPUT_REF, Engine, LLMAConfig
from llma.history import AnswerHistory
from llma.loading import load_model
from llma.proposer import CopyLength, Proposer
from llma.reference_index import ReferenceIndex
from llma.static.packing import draft_caps
from llma.verifier import count_accepted

BLOCK = 32


def tokens_per_forward(prompts: list[BenchPrompt], outputs: list[list[int]], drafts: int,
                       history: bool) -> tuple[float, float]:
    """Forced decoding of each prompt to its output through `Proposer`, one history for all of them:
    tokens per forward, and the proposer's host time per step (us, this machine's CPU)."""
    shared = AnswerHistory() if history else None
    caps = draft_caps(BLOCK, drafts) if drafts > 1 else ()
    tokens = forwards = 0
    spent = 0.0
    for p, target in zip(prompts, outputs):
        index = ReferenceIndex(p.references, min_n=1, max_n=4, policy="longest", prefer=OUTPUT_REF,
                               candidates=drafts)
        proposer = Proposer(index, CopyLength(k=BLOCK - 1), OUTPUT_REF, shared)
        proposer.prepare()
        out = target[:1]  # the prefill's token
        proposer.observe(out)
        forwards += 1
        while len(out) < len(target):
            room = len(target) - len(out) - 1  # a draft past the target's end cannot be accepted
            started = time.perf_counter()
            found = (proposer.propose_many(p.prompt + out, room, (), drafts, caps) if drafts > 1
                     else [d for d in [proposer.propose(p.prompt + out, room)] if d]) if room > 0 else []
            spent += time.perf_counter() - started
            accepted = [count_accepted(d.tokens, target[len(out):]) for d in found]
            best = max(accepted, default=0)
            if found:
                proposer.feedback(found[accepted.index(best)], best)
            new = target[len(out) : len(out) + best + 1]
            out += new
            proposer.observe(new)
            forwards += 1
        tokens += len(target)
    return tokens / forwards, spent * 1e6 / (forwards - len(prompts))


def free_outputs(prompts: list[BenchPrompt], max_new: int) -> list[list[int]]:
    """SmolLM2's greedy answers (fp32, CPU; through LLMA without history: the same tokens)."""
    engine = Engine(load_model(device="cpu", dtype="float32"))
    config = LLMAConfig(max_new_tokens=max_new, answer_history=False)
    return [list(engine.generate(p.prompt, p.references, config).tokens) for p in prompts]


def _cpu() -> str:
    """This machine's CPU model (Linux), else what the platform says."""
    info = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in info.read_text().splitlines()
             if line.startswith("model name")] if info.exists() else []
    return names[0] if names else platform.processor() or platform.machine()


def markdown(report: dict[str, object]) -> str:
    lines = [f"# Drafts from earlier answers' next tokens (llma.history), {report['prompts']} rag.jsonl "
             "prompts", "", f"Command: `{report['command']}`", "",
             "Tokens per forward (prefills included), counted without a model through `Proposer`; the "
             "history starts empty and grows answer by answer. free: SmolLM2's own greedy answers "
             "(fp32, CPU). "
             f"Proposer us/step: its host time per decoding step on this machine ({report['cpu']}).", "",
             "| outputs | drafts per step | without history | with history | gain | "
             "proposer us/step without | with |",
             "|---|---|---|---|---|---|---|"]
    for row in report["rows"]:
        lines.append(f"| {row['outputs']} | {row['drafts']} | {row['without']} | {row['with']} | "
                     f"{row['with'] / row['without'] - 1:+.1%} | {row['us_without']} | {row['us_with']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = forced_parser(__doc__.split("\n")[0])
    ap.add_argument("--free", action="store_true", help="also the model's own greedy answers (CPU, ~10 min)")
    args = ap.parse_args(argv)
    _, prompts = bench_prompts(load_model(device="cpu").tokenizer, args.data, args.limit)
    sets = {"forced": [p.target[: args.max_new_tokens] for p in prompts]}
    if args.free:
        sets["free"] = free_outputs(prompts, args.max_new_tokens)
    rows = []
    for name, outputs in sets.items():
        for drafts in (1, 4):
            without, us_without = tokens_per_forward(prompts, outputs, drafts, False)
            with_, us_with = tokens_per_forward(prompts, outputs, drafts, True)
            row = {"outputs": name, "drafts": drafts, "without": round(without, 3), "with": round(with_, 3),
                   "us_without": round(us_without, 1), "us_with": round(us_with, 1)}
            print(row, flush=True)
            rows.append(row)
    command_args = sys.argv[1:] if argv is None else argv
    report = {"command": "python -m benchmarks.draft_history " + " ".join(command_args),
              "prompts": len(prompts), "max_new_tokens": args.max_new_tokens, "cpu": _cpu(),
              "rows": rows}
    print(markdown(report))
    write_report(args.json, report, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
