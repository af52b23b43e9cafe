"""Stored prompt chunks (llma.batch.prefix): a prompt that starts with chunks another prompt computed
reuses them, and its output stays the one it gets alone on a fresh engine."""
from __future__ import annotations

import pytest
from llma_fixtures import tiny_llama
from test_llma_batch import LINEAR, _ids, _together

from llma import LLMAConfig
from llma.batch import BatchEngine
from llma.batch.prefix import PrefixStore, chunk_keys
from llma.batch.runner import PREFILL_CHUNK
from llma.options import DEFAULT_PREFIX_CACHE_MB, EngineOptions

C = PREFILL_CHUNK
CONFIG = LLMAConfig(max_new_tokens=12).greedy()


@pytest.fixture(scope="module")
def tiny():
    return tiny_llama(context=2048)


@pytest.fixture(scope="module", params=["full", "int4"])
def engines(tiny, request):
    """An engine with stored chunks and one without, of the same weights."""
    from llma.cpu.weights import int4_reason

    if request.param == "int4" and int4_reason(tiny.model) is not None:
        pytest.skip("no CPU int4 kernel here")
    stored = BatchEngine(tiny, slots=3, cost=LINEAR, weights=request.param, prefix_mb=64)
    plain = BatchEngine(tiny, slots=3, cost=LINEAR, weights=request.param)
    if not stored.runner.reuses_prefixes:
        pytest.skip("this machine's attention over key spans is not length-invariant: no reuse")
    yield stored, plain
    stored.close()
    plain.close()


def test_keys_are_chained_over_every_token_before_a_chunks_end():
    a = _ids(3 * C, 1)
    b = a[:C] + [a[C] + 1] + a[C + 1 :]  # one token changed in the second chunk
    ka, kb = chunk_keys(a, C, 3), chunk_keys(b, C, 3)
    assert ka[0] == kb[0] and ka[1] != kb[1] and ka[2] != kb[2]  # later chunks differ too
    assert chunk_keys(a + [5, 6], C, 2) == ka[:2]


def test_a_prompt_starting_with_stored_chunks_reuses_them_with_the_same_output(engines):
    stored, plain = engines
    first = _ids(2 * C + 40, 2)
    follow = first[: 2 * C] + _ids(70, 3)  # a next turn: the same first two chunks, then new tokens
    assert stored.generate(first, None, CONFIG).tokens == plain.generate(first, None, CONFIG).tokens
    assert len(stored.scheduler.prefixes) == 2  # its two whole chunks (the third is partial)
    before = stored.stats.reused_tokens
    result = stored.generate(follow, None, CONFIG)
    assert result.tokens == plain.generate(follow, None, CONFIG).tokens
    assert stored.stats.reused_tokens - before == 2 * C
    assert result.stats.reused_prompt_tokens == 2 * C  # the first event tells the caller
    assert plain.stats.reused_tokens == 0 and plain.scheduler.prefixes is None


def test_restored_chunks_are_what_the_request_reads(engines, tiny):
    """A stored chunk altered on purpose changes the output of a prompt that reuses it: the test
    above compares outputs that really depend on the restored keys and values."""
    stored, plain = engines
    prompt = _ids(C + 30, 4)
    stored.generate(prompt, None, CONFIG)
    store = stored.scheduler.prefixes
    key = chunk_keys(prompt, C, 1)[0]
    saved = store._chunks[key].clone()
    try:
        store._chunks[key].mul_(-1.0)
        assert stored.generate(prompt, None, CONFIG).tokens != plain.generate(prompt, None, CONFIG).tokens
    finally:
        store._chunks[key].copy_(saved)
    assert stored.generate(prompt, None, CONFIG).tokens == plain.generate(prompt, None, CONFIG).tokens


def test_a_prompt_of_whole_chunks_computes_its_last_chunk(engines):
    stored, plain = engines
    prompt = _ids(2 * C, 5)
    stored.generate(prompt, None, CONFIG)
    before = stored.stats.reused_tokens
    assert stored.generate(prompt, None, CONFIG).tokens == plain.generate(prompt, None, CONFIG).tokens
    assert stored.stats.reused_tokens - before == C  # the chunk with the last token is computed again


def test_reuse_inside_a_batch_keeps_every_output_and_frees_every_slot(engines):
    stored, plain = engines
    base = _ids(C + 10, 6)
    requests = [(base[:C] + _ids(20 + 7 * i, 10 + i), None, LLMAConfig(max_new_tokens=8 + i).greedy())
                for i in range(5)] + [(_ids(30, 20), {"a": _ids(40, 21)}, LLMAConfig(max_new_tokens=10))]
    solo = [plain.generate(p, r, c).tokens for p, r, c in requests]
    stored.generate(base, None, CONFIG)
    assert _together(stored, requests, [3, 0, 5, 1, 4, 2], [0.0, 0.01, 0.0, 0.02, 0.0, 0.01]) == solo
    assert stored.runner.cache.free == 3 and plain.runner.cache.free == 3


def test_the_least_recently_used_chunks_go_first(tiny):
    engine = BatchEngine(tiny, slots=1, cost=LINEAR)
    try:
        kv = engine.runner.cache.kv
        per_chunk = kv.element_size() * kv.shape[0] * kv.shape[1] * kv.shape[3] * C * kv.shape[5]
        store = PrefixStore(engine.runner.cache, C, 2 * per_chunk)
        prompts = [_ids(C + 1, 30 + i) for i in range(3)]
        for p in prompts[:2]:
            store.save(0, p, C)
        assert store.restore(0, prompts[0]) == C  # prompts[0]'s chunk now the most recently used
        store.save(0, prompts[2], C)  # full: prompts[1]'s chunk goes
        assert [store.restore(0, p) for p in prompts] == [C, 0, C]
        store.save(0, prompts[0], C - 1)  # not a whole chunk's end: nothing stored
        assert len(store) == 2 and store.saved_chunks == 3
        assert PrefixStore(engine.runner.cache, C, per_chunk - 1).max_chunks == 0
    finally:
        engine.close()


def test_options_store_chunks_on_cpu_by_default():
    assert EngineOptions().batch_prefix_mb(cuda=False) == DEFAULT_PREFIX_CACHE_MB
    assert EngineOptions().batch_prefix_mb(cuda=True) == 0
    assert EngineOptions(prefix_cache_mb=0).batch_prefix_mb(cuda=False) == 0
    assert EngineOptions.from_env({"LLMA_PREFIX_CACHE_MB": "64"}).prefix_cache_mb == 64
    with pytest.raises(ValueError, match="LLMA_PREFIX_CACHE_MB must be a whole number"):
        EngineOptions.from_env({"LLMA_PREFIX_CACHE_MB": "lots"})
