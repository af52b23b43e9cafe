"""The batch engine's host work per step, without the device: the scheduler, proposers, verdicts and
events of N concurrent requests, with a stand-in runner whose "model" continues every prompt with its
data set answer (forced decoding's outputs) at no cost. So a step's time here is what the host adds
to a device step at that batch size (issue 22: "the host must keep up").

    python -m benchmarks.batch_host --data .gpu/data/rag.jsonl --concurrency 1,16,64 --json out.json
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import torch

from benchmarks.data import bench_prompts
from benchmarks.report import commit, write_report
from benchmarks.runners import setup
from benchmarks.serve_batch import replay, run_one
from llma import AnswerHistory, LLMAConfig
from llma.batch import BatchEngine, CostModel, RowBudget
from llma.batch.cache import SlotCache
from llma.batch.scheduler import Scheduler
from llma.batch.step import Block, BlockOut

FLAT = CostModel([(1, 1.0), (1 << 16, 1.0)])  # rows cost nothing: every request verifies the full block


class AnswerRunner:
    """A runner without a model: each request's next token is its answer's (`answers`: the prompt's
    first chunk -> prompt + answer), then `eos`. Steps cost no device time."""

    def __init__(self, answers: dict[tuple[int, ...], list[int]], slots: int, context_length: int, eos: int,
                 chunk: int) -> None:
        self.answers = answers
        self.context_length = context_length
        self.cache = SlotCache(1, slots + 1, 1, context_length + 64, 1, torch.float32, torch.device("cpu"))
        self.eos = eos
        self.chunk = chunk
        self.sequence: dict[int, list[int]] = {}  # slot -> its request's prompt + answer
        self.logits = torch.zeros(1, 1)

    def attention_length(self, need: int) -> int:
        return min(need, self.context_length)

    def launch(self, blocks: Sequence[Block]) -> Callable[[], list[BlockOut]]:
        outs = []
        for b in blocks:
            if b.prompt and b.pos == 0:
                self.sequence[b.slot] = self.answers[b.ids[: self.chunk]]
            seq = self.sequence[b.slot]
            after = [b.pos + b.rel[r] + 1 for r in b.out]
            outs.append(BlockOut([seq[i] if i < len(seq) else self.eos for i in after], self.logits, [0] * len(after)))
        return lambda: outs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--limit", type=int, default=64)
    ap.add_argument("--concurrency", default="1,16,64")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--overlap", action="store_true", help="also two groups in turn")
    ap.add_argument("--model", default=None, help="its tokenizer, EOS and vocabulary only")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    loaded = setup(args)
    dataset, prompts = bench_prompts(loaded.tokenizer, args.data, args.limit)
    levels = [int(c) for c in args.concurrency.split(",")]
    engine = BatchEngine(loaded, slots=1, max_len=256, cost=FLAT)  # its checks and proposers; its runner replaced
    engine.close()
    chunk = 256
    firsts = Counter(tuple(p.prompt[:chunk]) for p in prompts)
    prompts = [p for p in prompts if p.target and firsts[tuple(p.prompt[:chunk])] == 1]  # told apart by it
    answers = {tuple(p.prompt[:chunk]): p.prompt + p.target[: args.max_new_tokens] for p in prompts}
    eos = min(engine.eos_token_ids, default=0)
    report: dict[str, object] = {
        "device": f"host only ({platform.processor() or 'cpu'}, {os.cpu_count()} cpus)", "dataset": dataset,
        "n_requests": len(prompts), "max_new_tokens": args.max_new_tokens, "model": loaded.name,
        "command": "python -m benchmarks.batch_host " + " ".join(sys.argv[1:] if argv is None else argv),
        "commit": commit(), "results": []}
    config = LLMAConfig(max_new_tokens=args.max_new_tokens)
    methods = [("greedy", config.greedy(), False), ("llma", config, False)]
    if args.overlap:
        methods += [("greedy_overlap", config.greedy(), True), ("llma_overlap", config, True)]
    for c in levels:
        for method, cfg, overlap in methods:
            runner = AnswerRunner(answers, max(levels), 4096, eos, chunk)
            engine.runner = runner
            engine.scheduler = Scheduler(runner, RowBudget(FLAT), overlap)
            done, wall = replay(lambda p: run_one(engine, p, cfg, False, AnswerHistory(), None), prompts, c, None)
            s = engine.scheduler.stats
            engine.close()
            tokens = sum(len(d.tokens) for d in done)
            row = {"method": method, "concurrency": c, "steps": s.steps,
                   "mean_batch": round(s.request_steps / s.steps, 2),
                   "host_ms_per_step": round(1e3 * (s.host_s + s.forward_s) / s.steps, 3),
                   "host_us_per_request_step": round(1e6 * (s.host_s + s.forward_s) / s.request_steps, 1),
                   "tokens_per_request_step": round(tokens / s.request_steps, 3),
                   "wall_s": round(wall, 3), "tokens": tokens}
            print(row, flush=True)
            report["results"].append(row)
    table = ["| method | concurrency | mean batch | host ms / step | host us / request-step | tokens / request-step |",
             "|---|---|---|---|---|---|"]
    table += [f"| {r['method']} | {r['concurrency']} | {r['mean_batch']} | {r['host_ms_per_step']} | "
              f"{r['host_us_per_request_step']} | {r['tokens_per_request_step']} |" for r in report["results"]]
    text = (f"# Batch engine host work per step: {dataset}, forced answers, no device\n\n{report['device']}; "
            f"{len(prompts)} requests, up to {args.max_new_tokens} new tokens, every request the full block.\n\n"
            + "\n".join(table) + f"\n\nCommit {report['commit']}. Command: `{report['command']}`\n")
    print(text)
    if args.json:
        write_report(args.json, report, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
