"""Seeded sampling gives the same sample with or without drafts (llma.verifier.SamplingVerifier).

Each token is drawn from the seed and its output position alone, so LLMA with the same seed must
emit exactly the tokens that plain sampling (drafting off) emits: on the generic HF loop, the static
backend (CPU, one draft and packed drafts), and the batch engine, alone and with other requests.
The references are the plain sample itself with edits (drafts mostly accepted) and another seed's
sample (drafts mostly rejected), so both paths of the rule run.
"""
import threading

import pytest
import torch

from llma import LLMAConfig
from llma.batch import BatchEngine, CostModel
from llma.engine import Engine
from llma.static import StaticBackend
from llma_fixtures import tiny_llama
from test_llma_static import _ids, expect_row_invariance

VOCAB = 97


def _config(seed: int, **kwargs) -> LLMAConfig:
    return LLMAConfig(max_new_tokens=40, temperature=0.9, top_p=0.95, seed=seed, repetition_stop=False,
                      min_n=1, **kwargs)


def _references(plain: list[int], other: list[int]) -> list[dict[str, list[int]]]:
    edited = list(plain)
    for i in (7, 19, 31):  # a few tokens changed, as a prediction that is nearly right
        edited[i] = (edited[i] + 1) % VOCAB
    return [{"prediction": edited}, {"prediction": plain[:12] + _ids(3, 1) + plain[12:]}, {"other": other}]


def _check(engine, prompt: list[int], seed: int, **kwargs) -> int:
    """LLMA == plain sampling for `seed`, whatever the references; the drafted tokens accepted."""
    config = _config(seed, **kwargs)
    plain = engine.generate(prompt, None, config.greedy()).tokens
    other = engine.generate(prompt, None, _config(seed + 100, **kwargs).greedy()).tokens
    assert len(plain) == 40 and plain != other
    accepted = 0
    for refs in _references(plain, other):
        result = engine.generate(prompt, refs, config)
        assert result.tokens == plain, f"seed {seed}, references {list(refs)}: the sample changed"
        accepted += result.stats.accepted_tokens
    assert engine.generate(prompt, None, config.greedy()).tokens == plain  # and reproducible
    return accepted


@pytest.fixture(scope="module")
def tiny():
    return tiny_llama(context=256)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hf_backend_llma_sample_is_plain_sample(tiny, seed):
    assert _check(Engine(tiny, backend="hf"), _ids(16, seed), seed) > 20


def test_hf_backend_with_penalties(tiny):
    engine = Engine(tiny, backend="hf")
    assert _check(engine, _ids(16, 5), 5, presence_penalty=0.5, repetition_penalty=1.2) > 10


@pytest.mark.parametrize("packed", [1, 4])
def test_static_backend_llma_sample_is_plain_sample(request, tiny, packed):
    block = 16
    expect_row_invariance(request, torch.float32, block)
    engine = Engine(tiny, backend=StaticBackend(tiny.model, block=block, packed_drafts=packed))
    accepted = sum(_check(engine, _ids(16, seed), seed) for seed in (3, 4))
    assert accepted > 20
    if packed > 1:  # sampling chooses among packed drafts too
        refs = _references(engine.generate(_ids(16, 3), None, _config(3).greedy()).tokens, _ids(40, 9))[0]
        assert max(e.candidates for e in engine.stream(_ids(16, 3), refs, _config(3))) > 1


def test_batch_engine_llma_sample_is_plain_sample_alone_and_together(tiny):
    engine = BatchEngine(tiny, slots=4, cost=CostModel([(16, 1.0), (4096, 1.0)]))  # full blocks
    try:
        assert sum(_check(engine, _ids(16, seed), seed) for seed in (6, 7)) > 20
        prompts = [_ids(12 + i, 40 + i) for i in range(4)]
        plain = [engine.generate(p, None, _config(i).greedy()).tokens for i, p in enumerate(prompts)]
        results: list = [None] * 4

        def run(i: int) -> None:  # LLMA with its own plain sample as the reference, four at once
            results[i] = engine.generate(prompts[i], _references(plain[i], plain[i - 1])[i % 3], _config(i)).tokens

        threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert results == plain
    finally:
        engine.close()


def test_no_seed_draws_one_per_generation(tiny):
    engine = Engine(tiny, backend="hf")
    config = LLMAConfig(max_new_tokens=20, temperature=1.0, repetition_stop=False)
    runs = {tuple(engine.generate(_ids(8, 0), None, config).tokens) for _ in range(4)}
    assert len(runs) > 1
    a, b = engine.verifier(config), engine.verifier(config)
    assert a.seed != b.seed
