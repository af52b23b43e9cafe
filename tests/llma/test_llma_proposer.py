"""The reference index and proposer, on hand-made token lists."""
import pytest

from llma.proposer import CopyLength, Proposer
from llma.reference_index import ReferenceIndex
from llma.types import Draft


def test_no_match_returns_none():
    index = ReferenceIndex({"a": [1, 2, 3, 4]})
    assert index.lookup([7, 8, 9], k=4) is None


def test_longest_suffix_wins():
    # [5, 6] occurs in "a" followed by 7; only [6] occurs in "b", followed by 9.
    index = ReferenceIndex({"a": [5, 6, 7, 8], "b": [0, 6, 9]}, min_n=1, max_n=3)
    draft = index.lookup([1, 5, 6], k=2)
    assert draft == Draft(tokens=(7, 8), ref_id="a", offset=2, match_len=2)


def test_match_at_reference_end_proposes_nothing_past_it():
    index = ReferenceIndex({"a": [1, 2, 3]}, min_n=1)
    # [3] ends the reference: nothing follows it, so it is not a usable match.
    assert index.lookup([3], k=4) is None
    assert index.lookup([2], k=4) == Draft((3,), "a", 2, 1)


def test_draft_is_cut_to_k():
    index = ReferenceIndex({"a": list(range(10, 30))}, min_n=1)
    assert index.lookup([12], k=3).tokens == (13, 14, 15)


@pytest.mark.parametrize(("policy", "expected"), [
    ("recent", ("b", 2, (0,))),          # the occurrence indexed last: reference "b"
    ("first", ("a", 1, (5, 4, 6, 7))),   # the first occurrence of the first reference
    ("longest", ("a", 1, (5, 4, 6, 7))),  # a:1 has 6 tokens after it, b:2 only 1
])
def test_several_occurrences_policies(policy, expected):
    # [4] occurs at a:0, a:2 and b:1; copies would start at a:1, a:3 and b:2.
    index = ReferenceIndex({"a": [4, 5, 4, 6, 7, 8, 9], "b": [3, 4, 0]}, min_n=1, max_n=1, policy=policy)
    draft = index.lookup([4], k=4)
    assert (draft.ref_id, draft.offset, draft.tokens) == expected


def test_longest_prefers_the_reference_with_more_to_copy():
    index = ReferenceIndex({"a": [4, 5], "b": [4, 6, 7, 8]}, min_n=1, max_n=1, policy="longest")
    assert index.lookup([4], k=3) == Draft((6, 7, 8), "b", 1, 1)
    # Capped at k, both offer 1 token: the tie goes to the earliest reference.
    assert index.lookup([4], k=1) == Draft((5,), "a", 1, 1)


def test_recent_prefers_latest_position_in_a_growing_reference():
    index = ReferenceIndex(min_n=1, max_n=1, policy="recent")
    index.extend("out", [4, 5, 4, 6])
    assert index.lookup([4], k=1) == Draft((6,), "out", 3, 1)


def test_appended_reference_is_indexed_incrementally():
    index = ReferenceIndex({"a": [1, 2]}, min_n=2, max_n=2)
    assert index.lookup([1, 2], k=2) is None
    index.extend("a", [3, 4])
    assert index.lookup([1, 2], k=2) == Draft((3, 4), "a", 2, 2)
    index.extend("new", [8, 9, 10])
    assert index.lookup([8, 9], k=2) == Draft((10,), "new", 2, 2)


def test_eos_inside_span_ends_the_draft():
    index = ReferenceIndex({"a": [1, 2, 3, 0, 5, 6]}, min_n=1)
    assert index.lookup([1], k=5, stop_tokens={0}).tokens == (2, 3, 0)


def test_context_shorter_than_max_n():
    index = ReferenceIndex({"a": [1, 2, 3]}, min_n=1, max_n=4)
    assert index.lookup([1], k=1).tokens == (2,)
    assert index.lookup([], k=1) is None


def test_min_n_filters_short_matches():
    index = ReferenceIndex({"a": [1, 2, 3]}, min_n=2, max_n=3)
    assert index.lookup([9, 2], k=1) is None
    assert index.lookup([1, 2], k=1).tokens == (3,)


def test_defaults():
    index = ReferenceIndex()
    assert (index.min_n, index.max_n, index.policy) == (1, 4, "recent")
    copy = CopyLength()
    assert (copy.k, copy.adaptive, copy.current) == (8, False, 8)
    proposer = Proposer(index)
    assert proposer.copy.k == 8 and proposer.output_ref is None
    assert proposer.propose([1], budget=4) is None


@pytest.mark.parametrize("kwargs", [
    {"min_n": 0}, {"min_n": 3, "max_n": 2}, {"policy": "random"},
])
def test_bad_index_arguments(kwargs):
    with pytest.raises(ValueError):
        ReferenceIndex(**kwargs)


def test_bad_tokens_and_k():
    index = ReferenceIndex({"a": [1, "x"]})  # checked with the indexing, at first use
    with pytest.raises(ValueError, match="ints"):
        index.lookup([1], k=1)
    with pytest.raises(ValueError, match="ints"):
        ReferenceIndex().extend("a", [2, True])
    with pytest.raises(ValueError, match="k must be"):
        ReferenceIndex({"a": [1, 2]}).lookup([1], k=0)
    with pytest.raises(ValueError, match="copy length"):
        CopyLength(k=0)
    with pytest.raises(ValueError, match="adaptive"):
        CopyLength(k=8, adaptive=True, k_min=1, k_max=4)


def test_adaptive_copy_length_grows_and_shrinks():
    copy = CopyLength(k=4, adaptive=True, k_min=2, k_max=16)
    copy.update(4, 4)
    assert copy.current == 8
    copy.update(8, 8)
    copy.update(16, 16)
    assert copy.current == 16  # capped at k_max
    copy.update(16, 3)
    assert copy.current == 8
    for _ in range(5):
        copy.update(8, 0)
    assert copy.current == 2  # floored at k_min
    fixed = CopyLength(k=4)
    fixed.update(4, 4)
    assert fixed.current == 4


def test_proposer_respects_budget_and_observes_output():
    proposer = Proposer(ReferenceIndex({"a": [1, 2, 3, 4, 5]}, min_n=1), CopyLength(k=4), output_ref="out")
    assert proposer.propose([1], budget=2).tokens == (2, 3)
    assert proposer.propose([1], budget=0) is None
    proposer.observe([7, 8, 9])
    assert proposer.propose([7], budget=4) == Draft((8, 9), "out", 1, 1)


def test_a_preferred_reference_wins_where_it_has_the_ngram():
    # [4] is in "a" (4 tokens to copy after it) and twice in the answer "out" (1 token after each).
    index = ReferenceIndex({"a": [4, 5, 6, 7, 8]}, min_n=1, max_n=1, policy="longest", prefer="out")
    assert index.lookup([4], k=4) == Draft((5, 6, 7, 8), "a", 1, 1)  # "out" does not exist yet
    index.extend("out", [4, 9, 4, 3])
    assert index.lookup([4], k=4) == Draft((3,), "out", 3, 1)  # its latest occurrence, not a's longer one
    assert index.lookup([6], k=2) == Draft((7, 8), "a", 3, 1)  # only in "a": the policy decides


def test_lookup_many_ranks_candidates_and_skips_dominated_ones():
    refs = {"a": [4, 5, 6, 1, 4, 5, 6, 2], "b": [9, 4, 5, 7, 7, 7, 7], "c": [0, 5, 3, 3, 3, 3]}
    index = ReferenceIndex(refs, min_n=1, max_n=2, policy="longest", candidates=8)
    drafts = index.lookup_many([8, 4, 5], k=3)
    assert drafts[0] == index.lookup([8, 4, 5], k=3)  # the single draft comes first
    # [4, 5] first: a:2 (6 1 4), b:3 (7 7 7), a:6 (6 2, shorter tail); then [5] alone: c:2 (3 3 3).
    # a:6's continuation differs from a:2's after one token, so it stays.
    assert [(d.ref_id, d.offset, d.tokens, d.match_len) for d in drafts] == [
        ("a", 2, (6, 1, 4), 2), ("b", 3, (7, 7, 7), 2), ("a", 6, (6, 2), 2), ("c", 2, (3, 3, 3), 1)]
    assert len(index.lookup_many([8, 4, 5], k=3, count=2)) == 2
    # A draft that another one starts with adds nothing: [6] after a's second [4, 5] at k=1.
    assert [d.tokens for d in index.lookup_many([4, 5], k=1)] == [(6,), (7,), (3,)]
    # Stop tokens cut each draft, as in lookup.
    assert [d.tokens for d in index.lookup_many([4, 5], k=3, stop_tokens={1})][:1] == [(6, 1)]
    assert index.lookup_many([42], k=3) == []
    one = ReferenceIndex(refs, min_n=1, max_n=2, policy="longest")  # candidates=1: one draft only
    assert one.lookup_many([8, 4, 5], k=3, count=4) == drafts[:1]
    with pytest.raises(ValueError, match="candidates"):
        ReferenceIndex(refs, candidates=0)


def test_lookup_many_with_caps_packs_the_drafts_into_the_first_cap():
    """Drafts packed into one block: each later draft within its cap (and k), all of them within
    caps[0], the first keeping what the later ones leave; a draft cut to what another starts with is
    skipped."""
    refs = {"a": [4, 5, 6, 1, 4, 5, 6, 2], "b": [9, 4, 5, 7, 7, 7, 7], "c": [0, 5, 3, 3, 3, 3]}
    index = ReferenceIndex(refs, min_n=1, max_n=2, policy="longest", candidates=8)
    full = index.lookup_many([8, 4, 5], k=6)  # a:2, b:3, a:6, then [5] alone: c:2
    assert [d.tokens for d in full] == [(6, 1, 4, 5, 6, 2), (7, 7, 7, 7), (6, 2), (3, 3, 3, 3)]
    packed = index.lookup_many([8, 4, 5], k=6, caps=(6, 2, 1, 1))
    # b:3 cut to 7 7; a:6 cut to 6 starts the first: skipped (and a:2, b:3 again under [5]); c:2 cut to 3
    assert [(d.ref_id, d.tokens) for d in packed] == [("a", (6, 1, 4)), ("b", (7, 7)), ("c", (3,))]
    assert [d.tokens for d in index.lookup_many([8, 4, 5], k=1, caps=(6, 2))] == [(6,), (7,)]  # each within k
    for bad in ((6, 2), (3, 2, 1)):  # one per draft; the first must keep a token
        with pytest.raises(ValueError, match="caps"):
            index.lookup_many([8, 4, 5], k=6, count=3, caps=bad)


def test_lookup_many_takes_the_answers_own_occurrences_first_latest_first():
    index = ReferenceIndex({"a": [3, 8, 8]}, min_n=1, max_n=1, policy="recent", prefer="out", candidates=4)
    index.extend("out", [3, 1, 3, 2, 3])
    assert [(d.ref_id, d.tokens) for d in index.lookup_many([3], k=2)] == [
        ("out", (2, 3)), ("out", (1, 3)), ("a", (8, 8))]
    proposer = Proposer(index, CopyLength(k=2))
    assert proposer.propose_many([3], budget=1, count=2) == index.lookup_many([3], k=1, count=2)


def test_near_continues_the_reference_copied_last_after_where_its_copy_ended():
    """`near`: among the longest suffix's occurrences, the first in the reference copied last, at or
    after where its accepted copy ended, wins (the answer skipped a word and goes on copying)."""
    refs = {"a": [5, 9, 1, 2, 9, 3, 4], "b": [9, 7, 7]}
    index = ReferenceIndex(refs, min_n=1, max_n=2, policy="first", prefer="out")
    assert index.lookup([8, 9], k=2).tokens == (1, 2)  # "first": a's first 9
    assert index.lookup([8, 9], k=2, near=("a", 3)) == Draft((3, 4), "a", 5, 1)
    assert index.lookup([8, 9], k=2, near=("b", 0)) == Draft((7, 7), "b", 1, 1)
    assert index.lookup([8, 9], k=2, near=("a", 6)).tokens == (1, 2)  # none after 6: the policy's
    assert index.lookup([8, 9], k=2, near=("zz", 0)).tokens == (1, 2)  # an unknown reference: ignored
    # Only among the longest matched suffix: [2, 9] is in a alone, b's [9] matches one token only.
    assert index.lookup([2, 9], k=2, near=("b", 0)) == Draft((3, 4), "a", 5, 2)
    index.extend("out", [9, 6])
    assert index.lookup([8, 9], k=2, near=("a", 3)).ref_id == "a"  # wins over the answer's own 9
    assert index.lookup([8, 9], k=2, near=("out", 0)).ref_id == "out"  # the answer: its own rule
    assert index.lookup_many([8, 9], k=2, count=1, near=("b", 0)) == [Draft((7, 7), "b", 1, 1)]


def test_proposer_remembers_where_the_last_accepted_copy_ended():
    index = ReferenceIndex({"a": [5, 9, 1, 2, 9, 3, 4]}, min_n=1, max_n=1, policy="first")
    proposer = Proposer(index, CopyLength(k=2))
    first = proposer.propose([8, 9], 2)
    assert first == Draft((1, 2), "a", 2, 1)
    proposer.feedback(first, 0)  # nothing accepted: no hint yet
    assert proposer.propose([8, 9], 2) == first
    proposer.feedback(first, 2)  # a copied up to 4: the next 9 of a is after it
    assert proposer.propose([8, 9], 2) == Draft((3, 4), "a", 5, 1)
    proposer.feedback(Draft((3, 4), "a", 5, 1), 0)  # a rejection keeps the last hint
    assert proposer.propose([8, 9], 2) == Draft((3, 4), "a", 5, 1)
