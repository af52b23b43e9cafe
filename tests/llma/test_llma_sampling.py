"""Speculative sampling with copied drafts has exactly the law of plain sampling.

A tiny random Llama with a 6-token vocabulary: the exact probability of every 2-token continuation is
computed from the model, and LLMA's sampled continuations (drafts proposed at nearly every step) are
compared with it by a chi-square goodness-of-fit test at significance 0.001. Plain sampling through
the same loop is checked the same way, and the verifier itself on a fixed distribution.
"""
import itertools
from collections import Counter

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from llma.engine import Engine, LLMAConfig
from llma.verifier import SamplingConfig, SamplingVerifier
from llma_fixtures import tiny_llama

VOCAB, PROMPT, SAMPLES, ALPHA = 6, [1, 4, 2], 3000, 1e-3


def _exact(model, warp: SamplingConfig) -> dict[tuple[int, int], float]:
    with torch.no_grad():
        first = warp.probs(model(torch.tensor([PROMPT])).logits[0, -1:])[0]
        probs = {}
        for a in range(VOCAB):
            second = warp.probs(model(torch.tensor([PROMPT + [a]])).logits[0, -1:])[0]
            for b in range(VOCAB):
                probs[(a, b)] = float(first[a] * second[b])
    return probs


def _fits(counts: Counter, exact: dict) -> float:
    cells = [c for c in exact if exact[c] > 0]
    observed = [counts[c] for c in cells]
    expected = [exact[c] * SAMPLES for c in cells]
    assert sum(counts[c] for c in exact if exact[c] == 0) == 0, "sampled an impossible continuation"
    # Pool the rare cells so that every expected count is at least 5, as the test requires.
    rare = [i for i, e in enumerate(expected) if e < 5]
    if rare:
        observed = [o for i, o in enumerate(observed) if i not in rare] + [sum(observed[i] for i in rare)]
        expected = [e for i, e in enumerate(expected) if i not in rare] + [sum(expected[i] for i in rare)]
    return _pvalue(observed, expected)


def _pvalue(observed: list[int], expected: list[float]) -> float:
    expected_arr = np.asarray(expected, dtype=np.float64)
    expected_arr *= sum(observed) / expected_arr.sum()  # scipy wants equal totals to 1e-8
    return chisquare(np.asarray(observed, dtype=np.float64), expected_arr).pvalue


@pytest.mark.slow
@pytest.mark.parametrize("warp", [
    SamplingConfig(temperature=1.0),
    SamplingConfig(temperature=0.7, top_k=4),
    SamplingConfig(temperature=1.3, top_p=0.8),
])
def test_llma_sampling_matches_the_model_distribution(warp):
    loaded = tiny_llama(vocab=VOCAB, seed=11, init=0.15)
    engine = Engine(loaded)
    exact = _exact(loaded.model, warp)
    refs = {"r": [0, 1, 2, 3, 4, 5, 4, 3, 2, 1, 0, 2, 4, 1, 3, 5, 0]}  # every token has a continuation
    results = {}
    for enabled in (True, False):
        # Three new tokens, so that the second one comes from a verify step with a one-token draft.
        config = LLMAConfig(enabled=enabled, min_n=1, max_n=2, k=2, adaptive=False, max_new_tokens=3,
                            temperature=warp.temperature, top_k=warp.top_k, top_p=warp.top_p, seed=1234 + enabled)
        verifier = engine.verifier(config)  # one seeded stream for all samples
        counts, proposed = Counter(), 0
        for _ in range(SAMPLES):
            result = engine.generate(PROMPT, refs, config, verifier=verifier)
            counts[tuple(result.tokens[:2])] += 1
            proposed += result.stats.proposed_tokens
        results[enabled] = (_fits(counts, exact), proposed)
    assert results[True][1] >= SAMPLES  # a draft at (nearly) every verify step
    assert results[True][0] > ALPHA, f"LLMA sampling differs from the model's law: p={results[True][0]:.2g}"
    assert results[False][0] > ALPHA, f"plain sampling differs from the model's law: p={results[False][0]:.2g}"


def test_verifier_single_position_law():
    # One row, a draft token x: the emitted token must follow p exactly (accept p(x), else p without x).
    p = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = p.log().unsqueeze(0).repeat(2, 1)
    verifier = SamplingVerifier(SamplingConfig(), torch.Generator().manual_seed(0))
    counts = Counter()
    for _ in range(SAMPLES):
        accepted, token = verifier.verify(logits, (1,), 0)
        counts[1 if accepted else token] += 1
    observed = [counts[i] for i in range(4)]
    assert _pvalue(observed, (p * SAMPLES).tolist()) > ALPHA


def test_warping_matches_definitions():
    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0]])
    assert torch.allclose(SamplingConfig(temperature=1.0).probs(logits), logits.softmax(-1))
    top2 = SamplingConfig(top_k=2).probs(logits)[0]
    assert (top2[2:] == 0).all() and torch.isclose(top2.sum(), torch.tensor(1.0))
    nucleus = SamplingConfig(top_p=0.7).probs(logits)[0]  # softmax: 0.61, 0.23, ... -> keep 2
    assert (nucleus > 0).tolist() == [True, True, False, False]
    for bad in ({"temperature": 0}, {"top_k": -1}, {"top_p": 0}, {"top_p": 1.5}):
        with pytest.raises(ValueError):
            SamplingConfig(**bad)


def test_seeded_sampling_is_reproducible():
    engine = Engine(tiny_llama(vocab=VOCAB, seed=11, init=0.15))
    config = LLMAConfig(min_n=1, max_new_tokens=12, temperature=1.0, seed=5)
    runs = [engine.generate(PROMPT, {"r": [1, 2, 3, 4, 5, 0]}, config).tokens for _ in range(2)]
    assert runs[0] == runs[1] and len(runs[0]) == 12


def test_all_continuations_are_enumerated():
    assert len(list(itertools.product(range(VOCAB), repeat=2))) == VOCAB ** 2
