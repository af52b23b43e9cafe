"""Seeded sampling with copied drafts has exactly the law of plain sampling, and the same samples.

A tiny random Llama with a 6-token vocabulary: the exact probability of every 2-token continuation is
computed from the model, and LLMA's sampled continuations over seeds (drafts proposed at nearly every
step), each equal to plain sampling's with the same seed, are compared with it by a chi-square
goodness-of-fit test at significance 0.001. The verifier itself is checked on fixed distributions:
one position's law, and two positions' joint law (independent draws).
"""
import itertools
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from llma.engine import Engine, LLMAConfig
from llma.verifier import SamplingConfig, SamplingVerifier, inverse_cdf, uniform
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
    # Three new tokens, so that the second one comes from a verify step with a one-token draft; one
    # seed per sample (the law is over seeds: a seed fixes its sample).
    config = LLMAConfig(min_n=1, max_n=2, k=2, adaptive=False, max_new_tokens=3,
                        temperature=warp.temperature, top_k=warp.top_k, top_p=warp.top_p)
    counts, proposed, accepted = Counter(), 0, 0
    for seed in range(SAMPLES):
        seeded = replace(config, seed=seed)
        result = engine.generate(PROMPT, refs, seeded)
        assert result.tokens == engine.generate(PROMPT, refs, seeded.greedy()).tokens, f"seed {seed}"
        counts[tuple(result.tokens[:2])] += 1
        proposed += result.stats.proposed_tokens
        accepted += result.stats.accepted_tokens
    assert proposed >= SAMPLES and 0 < accepted < proposed  # drafts at (nearly) every step, both verdicts
    p = _fits(counts, exact)
    assert p > ALPHA, f"sampling differs from the model's law: p={p:.2g}"


def test_verifier_single_position_law():
    # One row per position, a draft token x: over seeds, the emitted token follows p exactly.
    p = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = p.log().unsqueeze(0).repeat(2, 1)
    counts = Counter()
    for seed in range(SAMPLES):
        accepted, token = SamplingVerifier(SamplingConfig(), seed).verify(logits, (1,), 0)
        counts[1 if accepted else token] += 1
    observed = [counts[i] for i in range(4)]
    assert _pvalue(observed, (p * SAMPLES).tolist()) > ALPHA


def test_verifier_positions_are_independent():
    # Two positions of one seed: the pair follows p x q (16 cells), however the draft goes.
    p, q = torch.tensor([0.5, 0.3, 0.15, 0.05]), torch.tensor([0.1, 0.2, 0.3, 0.4])
    logits = torch.stack([p.log(), q.log()])
    counts = Counter()
    for seed in range(SAMPLES):
        verifier = SamplingVerifier(SamplingConfig(), seed)
        first = verifier.verify(logits[:1], (), 5)[1]
        second = verifier.verify(logits[1:], (), 6)[1]
        assert verifier.verify(logits, (first,), 5) == (1, second)  # one step with a draft: the same pair
        counts[(first, second)] += 1
    cells = list(itertools.product(range(4), repeat=2))
    assert _pvalue([counts[c] for c in cells], [float(p[a] * q[b]) * SAMPLES for a, b in cells]) > ALPHA


def test_uniforms_depend_on_seed_and_position_only():
    assert uniform(3, 7) == uniform(3, 7) and len({uniform(3, t) for t in range(100)}) == 100
    assert uniform(3, 7) != uniform(4, 7) and 0 <= uniform(2**63 - 1, 2**40) < 1
    probs = torch.tensor([0.0, 0.25, 0.0, 0.75, 0.0])
    assert [inverse_cdf(probs, u) for u in (0.0, 0.2499, 0.25, 0.999999)] == [1, 1, 3, 3]
    assert inverse_cdf(probs, 1 - 2**-53) == 3  # never a token of probability 0, even where u * total rounds up
    with pytest.raises(ValueError, match="seed"):
        SamplingVerifier(SamplingConfig(), -1)


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
