"""Tokens per forward of LLMA's drafting settings in forced decoding, on a fixed 32-row block.

    python -m benchmarks.draft_settings --data ../shared/data/llma-rag/rag.jsonl \
        --json benchmarks/results/draft_settings.json

In forced decoding the output is the target, and a step accepts the drafted tokens that match it:
how many tokens each forward adds depends only on the target, the references and the drafter, not
on the model. So this runs the real decoder loop, proposer and forced verifier over a backend that
computes nothing (its logits are never read) with the static backend's limit of 31 drafted tokens
per step, and counts forwards. It chose the static backend's drafting defaults
(llma.engine.fixed_block_defaults); on the GPU, `python -m benchmarks.decode --mode forced` measures the
same tokens per forward with the real model (benchmarks/GPU.md). Also with several drafts verified
per step: side by side (the backend's `rows`) or packed into the one block (its `tree`, with the
caps of llma.static.packing.draft_caps). Only the tokenizer is loaded.
"""
from __future__ import annotations

import itertools
import sys
from collections.abc import Sequence

import torch

from benchmarks.data import BenchPrompt, bench_prompts
from benchmarks.forced_count import forced_parser, write_report
from llma.decoder import Decoder, StopConfig
from llma.engine import OUTPUT_REF
from llma.loading import load_model
from llma.proposer import CopyLength, Proposer
from llma.backend import SingleDraftBackend
from llma.reference_index import POLICIES, ReferenceIndex
from llma.static.packing import draft_caps
from llma.verifier import ForcedVerifier

BLOCK = 32  # llma.static.backend.DEFAULT_BLOCK: the last token and up to 31 drafted ones
PACKED = [(32, n) for n in (2, 4, 6, 8, 11)] + [(64, n) for n in (6, 9, 12)]  # (block, drafts) for tree=N


class CountingBackend(SingleDraftBackend):
    """The Backend protocol with a fixed block and no model: forced decoding never reads logits."""

    name = "counting"

    def __init__(self, block: int = BLOCK, rows: int = 1, tree: int = 0) -> None:
        self.block = block
        self.rows = rows
        self.tree = tree
        self._len = 0
        self.draft_caps = draft_caps(block, tree) if tree else ()
        self._logits = torch.zeros(max(rows, tree), block, 1)

    context_length = property(lambda self: 1 << 20)
    cached = property(lambda self: self._len)
    max_draft = property(lambda self: self.block - 1)
    drafts_per_step = property(lambda self: self.tree or self.rows)

    def prefill(self, ids: Sequence[int]) -> torch.Tensor:
        self._len = len(ids)
        return self._logits[:1]

    def forward(self, ids: Sequence[int]) -> torch.Tensor:
        self._len += len(ids)
        return self._logits[0, : len(ids)]

    def forward_rows(self, rows: Sequence[Sequence[int]]) -> torch.Tensor:
        self._len += max(map(len, rows))
        return self._logits[: len(rows)]

    def keep(self, row: int, length: int) -> None:
        self._len = length

    def trim(self, length: int) -> None:
        self._len = length


def tokens_per_forward(prompts: list[BenchPrompt], eos: frozenset[int], max_new: int, min_n: int,
                       max_n: int, k: int, adaptive: bool, policy: str, prefer: bool, rows: int = 1,
                       tree: int = 0, block: int = BLOCK) -> float:
    """`prefer`: the answer's own occurrences first, as the engine has it (llma.engine.Engine.proposer).
    `rows`: drafts verified side by side per step (llma.static with rows > 1); `tree`: drafts packed
    into the one block of `block` rows."""
    decoder = Decoder(CountingBackend(block, rows, tree))
    tokens = forwards = 0
    for p in prompts:
        target = p.target[:max_new]
        index = ReferenceIndex(p.references, min_n=min_n, max_n=max_n, policy=policy,
                               prefer=OUTPUT_REF if prefer else None, candidates=tree or rows)
        proposer = Proposer(index, CopyLength(k, adaptive, min(2, k), block - 1), OUTPUT_REF)
        for event in decoder.stream(p.prompt, proposer=proposer, verifier=ForcedVerifier(target),
                                    stop=StopConfig(len(target), eos)):
            tokens += len(event.new_tokens)
            forwards += 1
    return tokens / forwards


def with_defaults(prompts: list[BenchPrompt], eos: frozenset[int], max_new: int, block: int = BLOCK,
                  rows: int = 1, tree: int = 0) -> float:
    """Tokens per forward (three decimals) with the static backend's defaults: min_n 1, max_n 4,
    k block - 1 (fixed), "longest", the answer's own occurrences first."""
    tpf = tokens_per_forward(prompts, eos, max_new, 1, 4, block - 1, False, "longest", True, rows=rows,
                             tree=tree, block=block)
    return round(tpf, 3)


def markdown(report: dict[str, object]) -> str:
    lines = [f"# Drafting settings, forced decoding: tokens per forward ({report['prompts']} prompts)", "",
             f"Data {report['data']}, block {report['block']}, max {report['max_new_tokens']} new tokens. "
             f"Command: `{report['command']}`", "",
             "Every setting with the proposer's `near` hint (a copy goes on in the passage copied last, "
             "llma.reference_index); before it, at commit 55e0100, the defaults gave 3.098 (1 draft), "
             "3.402 (4 packed in 32 rows).", "",
             "| min_n | max_n | k | adaptive | policy | answer's own occurrences first | tokens/forward |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['min_n']} | {r['max_n']} | {r['k']} | {r['adaptive']} | {r['policy']} | "
              f"{r['prefer_answer']} | {r['tokens_per_forward']} |" for r in report["rows"]]
    several = report.get("drafts_per_step_tokens_per_forward", {})
    lines += ["", "With the static backend's defaults (min_n 1, max_n 4, k 31, longest, the answer first) "
              "and N drafts verified side by side per step (`StaticBackend(cache_copies=N)`):", "",
              "| drafts per step | tokens/forward |", "|---|---|"]
    lines += [f"| {n} | {tpf} |" for n, tpf in several.items()]
    packed = report.get("packed_tokens_per_forward", [])
    lines += ["", "The same, the drafts packed into the one block (`StaticBackend(packed_drafts=N)`; the later "
              "drafts' lengths from `llma.static.packing.draft_caps`, the first takes what they leave):", "",
              "| block | drafts per step | draft lengths | tokens/forward |", "|---|---|---|---|"]
    lines += [f"| {r['block']} | {r['drafts']} | {r['caps']} | {r['tokens_per_forward']} |" for r in packed]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = forced_parser(__doc__.split("\n")[0]).parse_args(argv)
    loaded = load_model(device="cpu")  # for its tokenizer and EOS ids; the model itself never runs
    _, prompts = bench_prompts(loaded.tokenizer, args.data, args.limit)
    eos = loaded.model.generation_config.eos_token_id
    eos_ids = frozenset(eos if isinstance(eos, list) else [eos])
    grid = [(2, 4, 8, True, "recent", True)]  # the HF loop's defaults (llma.engine.HF_DEFAULTS)
    grid += [(min_n, max_n, BLOCK - 1, False, policy, prefer)
             for policy, min_n, max_n, prefer in itertools.product(POLICIES, (1, 2), (3, 4, 8), (True, False))
             if prefer or policy != "recent"]  # with "recent" the answer's occurrences are the latest anyway
    grid += [(1, 4, 8, True, policy, True) for policy in POLICIES]
    rows = []
    for min_n, max_n, k, adaptive, policy, prefer in grid:
        tpf = tokens_per_forward(prompts, eos_ids, args.max_new_tokens, min_n, max_n, k, adaptive, policy,
                                 prefer)
        rows.append({"min_n": min_n, "max_n": max_n, "k": k, "adaptive": adaptive, "policy": policy,
                     "prefer_answer": prefer, "tokens_per_forward": round(tpf, 3)})
        print(f"{tpf:.3f} tokens/forward: min_n={min_n} max_n={max_n} k={k} adaptive={adaptive} "
              f"policy={policy} prefer_answer={prefer}", flush=True)
    best = max(rows, key=lambda r: r["tokens_per_forward"])
    print(f"best: {best}")
    # The static backend's defaults with N drafts verified side by side per step (StaticBackend(cache_copies=N)).
    several = {str(n): with_defaults(prompts, eos_ids, args.max_new_tokens, rows=n) for n in (1, 2, 4, 8, 16)}
    print(f"drafts per step -> tokens/forward: {several}")
    packed = [{"block": block, "drafts": n, "caps": list(draft_caps(block, n)),
               "tokens_per_forward": with_defaults(prompts, eos_ids, args.max_new_tokens, block, tree=n)}
              for block, n in PACKED]
    print(f"packed: {packed}")
    report = {"data": str(args.data), "prompts": len(prompts), "max_new_tokens": args.max_new_tokens,
              "block": BLOCK,
              "command": "python -m benchmarks.draft_settings " + " ".join(argv or sys.argv[1:]),
              "rows": rows, "best": best, "drafts_per_step_tokens_per_forward": several,
              "packed_tokens_per_forward": packed}
    write_report(args.json, report, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
