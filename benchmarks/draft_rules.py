"""Drafting rules that do not anchor on the output's last token, counted in forced decoding (no model).

    python -m benchmarks.draft_rules --data ../shared/data/llma-rag/rag.jsonl \
        --json benchmarks/results/draft_rules.json

Why: on (a) most steps that accept nothing come where the answer starts a new copy: the next target
token is in the references, but nowhere after the output's last token (`--why`, below), so no
suffix-anchored draft can hold it. These rules draft such copies anyway, each as extra drafts packed
into the one 32-row block next to `ReferenceIndex.lookup_many`'s (31 drafted slots in all, the
first draft keeping what the others leave, as `StaticBackend(packed_drafts=N)` does):
- "resume+1": the answer changed one word of the passage it was copying: go on in that passage one
  token after where the last accepted copy ended (the proposer's `near` point), whatever the last token;
- "resume+0": the answer inserted a word: go on from that point itself;
- "fuzzy": the two tokens before the last one occur in a reference: what follows there, with the last
  token taken as a changed word (the token after the pair skipped) or as an inserted one (not skipped);
- "by match": the packing chosen by how long a suffix the first draft matches (2 tokens or more, or
  the answer's own: a strong match).
Every count runs the proposer's ranking with its `near` hint, forced decoding, max 128 new tokens,
the best accepted prefix per step. Only the tokenizer is loaded.
"""
from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from benchmarks.data import BenchPrompt, bench_prompts
from benchmarks.forced_count import count_forced, forced_parser, write_report
from llma.engine import OUTPUT_REF
from llma.loading import load_model
from llma.reference_index import ReferenceIndex
from llma.types import Draft, RefId

SLOTS = 31  # the 32-row block's drafted slots (llma.static.backend.DEFAULT_BLOCK - 1)
PACKED = (31, 5, 5, 5)  # StaticBackend(packed_drafts=4)'s caps (llma.static.packing.draft_caps(32, 4))


@dataclass
class Step:
    """What a rule sees: the index, the output so far after the prompt, the room for a draft, and
    where the last accepted copy ended (the proposer's `near`)."""

    index: ReferenceIndex
    context: list[int]
    room: int
    near: tuple[RefId, int] | None


Rule = Callable[[Step], list[Draft]]


def ranked(caps: Sequence[int]) -> Rule:
    """`lookup_many`'s drafts (one draft: `lookup`'s), as the proposer gets them."""
    def rule(s: Step) -> list[Draft]:
        if len(caps) == 1:
            first = s.index.lookup(s.context, min(caps[0], s.room), near=s.near)
            return [first] if first else []
        return s.index.lookup_many(s.context, s.room, count=len(caps), caps=caps, near=s.near)
    return rule


def resume(s: Step, skips: Sequence[int], cap: int) -> list[Draft]:
    """The passage copied last, from `skips` tokens after where the last accepted copy ended."""
    if s.near is None:
        return []
    ref_id, end = s.near
    ref = s.index.references[ref_id]
    return [Draft(tuple(ref[end + k : end + k + cap]), ref_id, end + k, 0)
            for k in skips if end + k < len(ref)]


def fuzzy(s: Step, cap: int) -> list[Draft]:
    """After the first occurrence of the two tokens before the last one: the last one as a changed
    word (the token after the pair skipped), then as an inserted one."""
    pair = s.context[-3:-1]
    for ref_id, ref in s.index.references.items():
        for end in range(2, len(ref)):
            if ref[end - 2] == pair[0] and ref[end - 1] == pair[1] and ref[end] != s.context[-1]:
                return [Draft(tuple(ref[end + 1 : end + 1 + cap]), ref_id, end + 1, 0),
                        Draft(tuple(ref[end : end + cap]), ref_id, end, 0)]
    return []


def with_extra(base: Rule, extra: Callable[[Step], list[Draft]]) -> Rule:
    """`base`'s drafts, then `extra`'s that start with a token no draft starts with, within SLOTS."""
    def rule(s: Step) -> list[Draft]:
        drafts = base(s)
        for d in extra(s):
            if d.tokens and all(d.tokens[:1] != o.tokens[:1] for o in drafts):
                drafts.append(d)
        if drafts:  # the first draft keeps what the others leave (lookup_many's _fit_first)
            room = SLOTS - sum(len(d.tokens) for d in drafts[1:])
            drafts[0] = replace(drafts[0], tokens=drafts[0].tokens[: max(0, room)])
        return drafts
    return rule


def by_match(strong: Sequence[int], weak: Sequence[int]) -> Rule:
    """One packing after a strong match of the first draft, another after a weak one."""
    def rule(s: Step) -> list[Draft]:
        first = s.index.lookup(s.context, s.room, near=s.near)
        if first is None:
            return []
        strong_match = first.match_len >= 2 or first.ref_id == OUTPUT_REF
        return ranked(strong if strong_match else weak)(s)
    return rule


RULES: dict[str, Rule] = {
    "one draft": ranked((SLOTS,)),
    "one draft + resume+1 (5)": with_extra(ranked((SLOTS,)), lambda s: resume(s, (1,), 5)),
    "one draft + resume+0, +1 (5 each)": with_extra(ranked((SLOTS,)), lambda s: resume(s, (0, 1), 5)),
    "one draft + fuzzy (5 each)": with_extra(ranked((SLOTS,)), lambda s: fuzzy(s, 5)),
    "4 packed (the default)": ranked(PACKED),
    "4 packed + resume+1 (5)": with_extra(ranked(PACKED), lambda s: resume(s, (1,), 5)),
    "4 packed + resume+0, +1, +2 (3 each)": with_extra(ranked(PACKED), lambda s: resume(s, (0, 1, 2), 3)),
    "4 packed + fuzzy (5 each)": with_extra(ranked(PACKED), lambda s: fuzzy(s, 5)),
    "3 packed + fuzzy (5 each)": with_extra(ranked((31, 5, 5)), lambda s: fuzzy(s, 5)),
    "by match: 4 packed, else 8 packed": by_match(PACKED, (31, 3, 3, 3, 3, 3, 3, 3)),
    "by match: one draft, else 4 packed": by_match((SLOTS,), PACKED),
    "by match: 4 packed, else 4 of 16, 5, 5, 5": by_match(PACKED, (16, 5, 5, 5)),
}


def count(prompts: list[BenchPrompt], rule: Rule, max_new: int, why: Counter[str] | None = None) -> float:
    """Tokens per forward of `rule` in forced decoding; `why`: the steps that accepted nothing, by cause."""
    def miss(index: ReferenceIndex, context: list[int], wanted: int) -> None:
        why[_cause(index, context, wanted)] += 1

    return count_forced(prompts, lambda index, context, room, near: rule(Step(index, context, room, near)),
                        max_new, candidates=16, miss=miss if why is not None else None)


def _cause(index: ReferenceIndex, context: list[int], wanted: int) -> str:
    """Why no draft held the wanted token: it follows the last token somewhere (ranked too low), it is
    in a reference only elsewhere (a new copy starts), or in none (the answer's own word)."""
    refs = index.references.values()
    if any(ref[i] == context[-1] and ref[i + 1] == wanted for ref in refs for i in range(len(ref) - 1)):
        return "follows the last token somewhere, not drafted"
    if any(wanted in ref for ref in refs):
        return "in a reference, never after the last token"
    return "in no reference (nor the answer so far)"


def markdown(report: dict[str, object]) -> str:
    lines = [f"# Drafting rules not anchored on the last token, forced decoding ({report['prompts']} "
             "prompts)", "",
             f"Data {report['data']}, a 32-row block (31 drafted slots), max {report['max_new_tokens']} new "
             f"tokens, no model. Command: `{report['command']}`", "",
             "Steps of the default (4 packed) that accepted nothing, by cause:", "", "| cause | steps |",
             "|---|---|"]
    lines += [f"| {cause} | {n} |" for cause, n in report["nothing_accepted"].items()]
    lines += ["", "| rule | tokens/forward |", "|---|---|"]
    lines += [f"| {name} | {tpf} |" for name, tpf in report["tokens_per_forward"].items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = forced_parser(__doc__.split("\n")[0]).parse_args(argv)
    _, prompts = bench_prompts(load_model(device="cpu").tokenizer, args.data, args.limit)
    why: Counter[str] = Counter()
    results = {}
    for name, rule in RULES.items():
        causes = why if name == "4 packed (the default)" else None
        results[name] = round(count(prompts, rule, args.max_new_tokens, causes), 3)
        print(f"{results[name]} tokens/forward: {name}", flush=True)
    report = {"command": "python -m benchmarks.draft_rules " + " ".join(argv or sys.argv[1:]),
              "data": str(args.data),
              "prompts": len(prompts), "max_new_tokens": args.max_new_tokens,
              "nothing_accepted": dict(why.most_common()), "tokens_per_forward": results}
    print(markdown(report))
    write_report(args.json, report, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
