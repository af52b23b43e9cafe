"""Property-based tests (hypothesis) for the verifiers, against oracles written from their contract:
`count_accepted` and `GreedyVerifier` against the argmax sequence; `SamplingVerifier`: values in
range, never accepts or emits a token of zero warped probability, and a draft changes no token
(the same tokens as the rows verified one by one without it). (The reference index:
test_llma_properties.py; the decoder loop: test_llma_properties_decoder.py.)
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from llma.verifier import GreedyVerifier, SamplingConfig, SamplingVerifier, count_accepted

FAST = settings(max_examples=150, deadline=None)
MEDIUM = settings(max_examples=60, deadline=None)


# --------------------------------------------------------------------------------------------------
# count_accepted and the greedy verifier.
# --------------------------------------------------------------------------------------------------


@FAST
@given(common=st.lists(st.integers(0, 3), max_size=6), draft_tail=st.lists(st.integers(0, 3), max_size=6),
       target_tail=st.lists(st.integers(0, 3), max_size=6))
def test_count_accepted_is_the_longest_common_prefix(common, draft_tail, target_tail):
    draft, targets = common + draft_tail, common + target_tail
    n = count_accepted(draft, targets)
    assert 0 <= n <= min(len(draft), len(targets))
    assert draft[:n] == targets[:n]
    assert n == len(draft) or n == len(targets) or draft[n] != targets[n], "n must be maximal"
    assert n >= len(common)
    assert count_accepted(tuple(draft), tuple(targets)) == n


def first_argmax(row: Sequence[float]) -> int:
    return max(range(len(row)), key=lambda i: (row[i], -i))


@st.composite
def logits_and_draft(draw, max_draft=6, finite_only=True):
    vocab = draw(st.integers(1, 8))
    length = draw(st.integers(0, max_draft))
    # Integer-valued logits from a small range: ties are frequent (torch takes the first maximum).
    rows = draw(st.lists(st.lists(st.integers(-3, 3).map(float), min_size=vocab, max_size=vocab),
                         min_size=length + 1, max_size=length + 1))
    draft = []
    for i in range(length):
        # Mostly the argmax (long accepted runs), sometimes any token.
        if draw(st.integers(0, 3)):
            draft.append(first_argmax(rows[i]))
        else:
            draft.append(draw(st.integers(0, vocab - 1)))
    return rows, draft


@FAST
@given(case=logits_and_draft(), position=st.integers(0, 100))
def test_greedy_verifier_accepts_exactly_the_argmax_prefix(case, position):
    rows, draft = case
    logits = torch.tensor(rows, dtype=torch.float32)
    accepted, token = GreedyVerifier().verify(logits, draft, position)
    greedy = [first_argmax(r) for r in rows]
    assert 0 <= accepted <= len(draft)
    assert 0 <= token < logits.shape[1]
    assert [*draft[:accepted], token] == greedy[: accepted + 1]
    assert accepted == len(draft) or draft[accepted] != greedy[accepted], "accepted must be maximal"


# --------------------------------------------------------------------------------------------------
# The sampling verifier.
# --------------------------------------------------------------------------------------------------


@st.composite
def sampling_case(draw):
    vocab = draw(st.integers(2, 8))
    length = draw(st.integers(0, 5))
    finite = st.floats(-8, 8, allow_nan=False, width=32)
    rows = []
    for _ in range(length + 1):
        row = draw(st.lists(st.one_of(finite, finite, st.just(float("-inf"))), min_size=vocab, max_size=vocab))
        if all(x == float("-inf") for x in row):
            row[draw(st.integers(0, vocab - 1))] = draw(finite)
        rows.append(row)
    config = SamplingConfig(
        temperature=draw(st.floats(0.05, 4.0)),
        top_k=draw(st.integers(0, vocab + 1)),
        top_p=draw(st.one_of(st.just(1.0), st.floats(0.01, 1.0))),
    )
    logits = torch.tensor(rows, dtype=torch.float32)
    probs = config.probs(logits)
    draft = []
    for i in range(length):
        zero = [t for t in range(vocab) if probs[i, t] == 0]
        choice = draw(st.integers(0, 2))
        if choice == 0 and zero:
            draft.append(draw(st.sampled_from(zero)))  # a token the warp ruled out
        elif choice == 1:
            draft.append(int(probs[i].argmax()))
        else:
            draft.append(draw(st.integers(0, vocab - 1)))
    return logits, draft, config, draw(st.integers(0, 2**32 - 1))


@MEDIUM
@given(case=sampling_case())
def test_sampling_verifier_stays_in_range_and_never_takes_impossible_tokens(case):
    logits, draft, config, seed = case
    probs = config.probs(logits)
    assert torch.allclose(probs.sum(-1), torch.ones(len(probs)), atol=1e-5)
    # The top token always survives the warp.
    assert all(probs[i, int(logits[i].argmax())] > 0 for i in range(len(logits)))
    verifier = SamplingVerifier(config, seed)
    results = []
    for position in range(4):  # several output positions: several draws
        accepted, token = verifier.verify(logits, draft, position)
        results.append((accepted, token))
        assert 0 <= accepted <= len(draft)
        assert 0 <= token < logits.shape[1]
        for i in range(accepted):
            assert probs[i, draft[i]] > 0, f"accepted draft token {draft[i]} of zero probability at {i}"
        assert probs[accepted, token] > 0, "emitted a token of zero probability"
        if accepted < len(draft):
            assert token != draft[accepted], "a rejected token is re-emitted"
        # The draft changes no token: row by row without a draft gives the same tokens.
        alone = [verifier.verify(logits[i : i + 1], (), position + i)[1] for i in range(accepted + 1)]
        assert alone == [*draft[:accepted], token]
    # Same seed, same answers.
    again = SamplingVerifier(config, seed)
    assert [again.verify(logits, draft, position) for position in range(4)] == results
