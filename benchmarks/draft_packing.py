"""Tokens per forward if several drafts shared the one fixed query block (forced decoding, no model).

    python -m benchmarks.draft_packing --data ../shared/data/llma-rag/rag.jsonl \
        --json benchmarks/results/draft_packing.json

Pack several drafts into the one block, draft i cut to `caps[i]` tokens, all within the block's 31
drafted tokens (or a larger block's): `StaticBackend(packed_drafts=N)` does it (llma/static/packing.py, its
caps from `draft_caps`; draft_settings.py counts those). This counts other cap choices, and what a
token tree would add: "flat" gives each draft its own slots (what the backend does), "trie" stores
the drafts' shared prefixes once, so a later draft costs only the slots after the prefix it shares
with an earlier one. As `draft_settings.py` does: forced decoding, the drafts of
`ReferenceIndex.lookup_many` with the static backend's defaults (without the proposer's `near`
hint), the best accepted prefix per step. Only the tokenizer is loaded.
"""
from __future__ import annotations

import json
import sys
from dataclasses import replace

from benchmarks.data import BenchPrompt, bench_prompts
from benchmarks.forced_count import count_forced, forced_parser
from llma.loading import load_model
from llma.reference_index import ReferenceIndex
from llma.types import Draft

PACKINGS = {31: [(31,), (16, 15), (20, 11), (24, 7), (16, 8, 7), (16, 8, 4, 3), (20, 4, 4, 3), (8, 8, 8, 7),
                 (31, 5, 5, 5), (31, 3, 3, 3, 3, 3, 3, 3), (31, 3, 2, 2, 2, 2, 2, 2)],
            63: [(31, 31), (31, 16, 16), (31, 16, 8, 8), (31, 8, 6, 6, 6, 6)],
            127: [(31, 31, 31, 31), (31, 16, 16, 16, 16, 16, 16), (31, 16, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8)]}


def packed(drafts: list[tuple[int, ...]], caps: tuple[int, ...], total: int,
           trie: bool) -> list[tuple[int, ...]]:
    """Each draft cut to its cap and to the slots left of `total` (trie: a shared prefix is free); the
    first draft last, so that it keeps what the others leave, as in the backend (`lookup_many`)."""
    kept = []
    nodes = set()
    for draft, cap in [*zip(drafts[1:], caps[1:]), (drafts[0], caps[0])] if drafts else []:
        n = 0
        while n < min(cap, len(draft)) and (total > 0 or (trie and draft[: n + 1] in nodes)):
            if not trie or draft[: n + 1] not in nodes:
                nodes.add(draft[: n + 1])
                total -= 1
            n += 1
        kept.append(draft[:n])
    return kept


def tokens_per_forward(prompts: list[BenchPrompt], caps: tuple[int, ...], total: int, max_new: int,
                       trie: bool = False) -> float:
    def drafter(index: ReferenceIndex, context: list[int], room: int, near: object) -> list[Draft]:
        drafts = index.lookup_many(context, room, count=len(caps))  # without `near`, as counted before it
        cuts = packed([d.tokens for d in drafts], caps, total, trie)  # the block's drafted slots, first last
        return [replace(d, tokens=cut) for d, cut in zip([*drafts[1:], *drafts[:1]], cuts)]

    return count_forced(prompts, drafter, max_new, candidates=max(2, len(caps)))


def main(argv: list[str] | None = None) -> int:
    args = forced_parser(__doc__.split("\n")[0]).parse_args(argv)
    _, prompts = bench_prompts(load_model(device="cpu").tokenizer, args.data, args.limit)
    results = []
    for total, packings in PACKINGS.items():
        for caps in packings:
            flat = round(tokens_per_forward(prompts, caps, total, args.max_new_tokens, False), 3)
            trie = round(tokens_per_forward(prompts, caps, total, args.max_new_tokens, True), 3)
            results.append({"drafted_tokens_per_step": total, "caps": list(caps), "tokens_per_forward": flat,
                            "tokens_per_forward_trie": trie})
            print(f"{total} drafted tokens, caps {caps}: {flat} tokens/forward, {trie} as a trie", flush=True)
    report = {"command": "python -m benchmarks.draft_packing " + " ".join(argv or sys.argv[1:]),
              "prompts": len(prompts), "max_new_tokens": args.max_new_tokens, "results": results}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
