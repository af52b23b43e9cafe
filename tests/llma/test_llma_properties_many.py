"""Property-based tests (hypothesis) for `ReferenceIndex.lookup_many`, the drafts a packed block verifies.

The oracle ranks drafts from the documented contract by brute force: the first is `lookup`'s (its
own oracle: test_llma_properties.py); then, for each suffix length n from the longest down, the
preferred reference's occurrences latest first, then the policy's order over every occurrence of the
n-token suffix; a draft that one already chosen starts with is skipped; each later draft within its
cap, the first cut to what they leave of caps[0].
"""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from llma.reference_index import POLICIES, ReferenceIndex, fit_first
from llma.static.packing import draft_caps
from llma.types import Draft
from test_llma_properties import draft_tokens

VOCAB = 5
tokens_st = st.lists(st.integers(0, VOCAB - 1), max_size=16)


def _ordered(refs: dict, prefer: object, suffix: list[int], k: int, policy: str) -> list[tuple[object, int]]:
    """Every copy start after `suffix` in the contract's order (the references built in order)."""
    n = len(suffix)

    def starts(ref_ids: list) -> list[tuple[object, int]]:
        return [(r, e) for r in ref_ids for e in range(n, len(refs[r])) if refs[r][e - n : e] == suffix]
    own = starts([prefer]) if prefer in refs else []
    others = starts([r for r in refs if r != prefer])
    if policy == "recent":
        others = others[::-1]
    elif policy == "longest":  # most tokens to copy, capped at k; ties: earliest
        others = sorted(others, key=lambda o: -min(k, len(refs[o[0]]) - o[1]))
    return own[::-1] + others


def oracle_many(index: ReferenceIndex, refs: dict, context: list[int], k: int, stop: frozenset[int],
                count: int, caps: tuple[int, ...]) -> list[Draft]:
    first = index.lookup(context, k, stop)
    if first is None or count == 1:
        return [first] if first else []
    longest = max(caps[1:count]) if caps else k
    drafts, chosen = [first], {first.tokens[:i] for i in range(1, longest + 1)}
    for n in range(min(index.max_n, len(context)), index.min_n - 1, -1):
        for ref_id, start in _ordered(refs, index.prefer, context[len(context) - n :], k, index.policy):
            limit = min(k, caps[len(drafts)]) if caps else k
            tokens = draft_tokens(refs[ref_id], start, limit, stop)
            if tokens in chosen:
                continue
            chosen |= {tokens[:i] for i in range(1, longest + 1)}
            drafts.append(Draft(tokens, ref_id, start, n))
            if len(drafts) == count:
                return fit_first(drafts, caps[0]) if caps else drafts
    return fit_first(drafts, caps[0]) if caps else drafts


@settings(max_examples=300, deadline=None)
@given(refs=st.lists(tokens_st, min_size=1, max_size=4), answer=tokens_st, policy=st.sampled_from(POLICIES),
       max_n=st.integers(1, 4), min_n=st.integers(1, 2), count=st.integers(1, 5), block=st.sampled_from([0, 12, 32]),
       data=st.data())
def test_lookup_many_ranks_drafts_as_the_contract_says(refs, answer, policy, max_n, min_n, count, block, data):
    min_n = min(min_n, max_n)
    references = {f"r{i}": r for i, r in enumerate(refs)}
    index = ReferenceIndex(references, min_n=min_n, max_n=max_n, policy=policy, prefer="out", candidates=count)
    index.extend("out", answer)
    everything = {**references, "out": answer}
    caps = draft_caps(block, count) if block and count > 1 else ()
    for _ in range(4):
        source = data.draw(st.sampled_from([*refs, answer]))
        i = data.draw(st.integers(0, len(source)))
        context = data.draw(st.lists(st.integers(0, VOCAB - 1), max_size=2)) + source[i : i + 4]
        if not context:
            continue
        k = data.draw(st.integers(1, 9))
        stop = frozenset(data.draw(st.sets(st.integers(0, VOCAB - 1), max_size=1)))
        got = index.lookup_many(context, k, stop, count, caps)
        assert got == oracle_many(index, everything, context, k, stop, count, caps)
