"""The static backend with several rows per step: drafts verified side by side (llma.static, rows > 1).

Each row is a block on its own copy of the cache; greedy steps run the same block in every row, so
greedy and LLMA run the same shapes, and LLMA is bit-identical to greedy through the same backend.
On CPU in fp32 (the bitwise checks xfail where this CPU's matrix product is not row-invariant).
"""
import pytest
import torch

from llma.engine import Engine, LLMAConfig
from llma.options import EngineOptions
from llma.static import StaticBackend, select_backend
from llma_fixtures import SHARED_DATA
from test_llma_static import _hf_greedy, _ids, _tiny, expect_row_invariance

BLOCK, ROWS = 8, 3


def test_forward_rows_equal_one_row_forwards_and_keep_syncs_every_copy(request):
    expect_row_invariance(request, torch.float32, BLOCK * ROWS)
    st = StaticBackend(_tiny().model, block=BLOCK, cache_copies=ROWS)
    prompt, drafts = _ids(20, 1), [_ids(5, 2), _ids(8, 3), _ids(1, 4)]
    st.prefill(prompt)
    alone = []
    for d in drafts:
        alone.append(st.forward(d))
        st.trim(20)
    logits = st.forward_rows(drafts)
    assert logits.shape[:2] == (3, 8) and st.cached == 28
    for d, one, rows in zip(drafts, alone, logits):
        assert torch.equal(rows[: len(d)], one)
    st.keep(1, 25)  # the second draft's first 5 tokens
    assert st.cached == 25
    for cache in (st.cache.k, st.cache.v):
        assert all(torch.equal(cache[:, r, :, :25], cache[:, 1, :, :25]) for r in range(ROWS))
    st.trim(20)  # and on from there as if the kept tokens had been fed alone
    expected = st.forward(drafts[1][:5] + [7])[-1]
    st.trim(20)
    st.forward_rows(drafts)
    st.keep(1, 25)
    assert torch.equal(st.forward([7])[0], expected)


def test_rows_bad_input():
    model = _tiny().model
    with pytest.raises(ValueError, match="cache_copies"):
        StaticBackend(model, cache_copies=0)
    with pytest.raises(ValueError, match="cache_copies"):
        StaticBackend(model, cache_copies=2, attention="flash")
    st = StaticBackend(model, block=BLOCK, cache_copies=2)
    with pytest.raises(ValueError, match="before a prefill"):
        st.forward_rows([[1]])
    st.prefill(_ids(10, 5))
    for bad in ([], [[1]] * 3, [[1] * (BLOCK + 1)], [[1], []]):
        with pytest.raises(ValueError, match="forward_rows needs"):
            st.forward_rows(bad)
    st.forward_rows([[1, 2], [3]])
    with pytest.raises(ValueError, match="keep needs"):
        st.keep(2, 11)
    with pytest.raises(ValueError, match="keep needs"):
        st.keep(0, 13)
    st.keep(0, 11)
    with pytest.raises(ValueError, match="keep needs a forward_rows"):
        st.keep(0, 11)  # once per forward_rows
    assert select_backend(model, EngineOptions("static", cache_copies=2)).cache_copies == 2


def llma_on_pieces(loaded, backend, seed=8):
    """Greedy through `backend`, and LLMA's events through it with the answer in pieces among noise
    (a token often recurs, so a step has several drafts to try): (prompt, refs, config, greedy, events)."""
    engine = Engine(loaded, backend=backend)
    prompt = _ids(24, seed)
    config = LLMAConfig(max_new_tokens=40)
    greedy = engine.generate(prompt, None, config.greedy()).tokens
    refs = {"noise": _ids(60, 9), "a": greedy[3:12] + _ids(10, 10), "b": greedy[10:30], "c": greedy[25:]}
    events = list(engine.stream(prompt, refs, config))
    assert [t for e in events for t in e.new_tokens] == greedy
    return prompt, refs, config, greedy, events


def test_llma_with_rows_bit_identical_to_greedy_and_uses_them():
    loaded = _tiny()
    single = Engine(loaded, backend=StaticBackend(loaded.model, block=BLOCK))
    prompt, refs, config, greedy, events = llma_on_pieces(loaded, StaticBackend(loaded.model, block=BLOCK, cache_copies=ROWS))
    assert greedy == _hf_greedy(loaded.model, prompt, 40)
    assert max(e.candidates for e in events) == ROWS
    alone = single.generate(prompt, refs, config)
    assert alone.tokens == greedy and len(events) <= alone.stats.forward_passes


def test_sampling_on_a_rows_backend_verifies_several_drafts_and_keeps_the_sample(request):
    expect_row_invariance(request, torch.float32, BLOCK * ROWS)
    loaded = _tiny()
    engine = Engine(loaded, backend=StaticBackend(loaded.model, block=BLOCK, cache_copies=ROWS))
    prompt = _ids(24, 8)
    config = LLMAConfig(max_new_tokens=20, temperature=0.8, seed=3, min_n=1)
    plain = engine.generate(prompt, None, config.greedy()).tokens
    refs = {"noise": _ids(60, 9), "sample": plain[:9] + _ids(2, 10) + plain[9:]}
    events = list(engine.stream(prompt, refs, config))
    assert max(e.candidates for e in events) > 1 and sum(e.accepted for e in events) > 5
    assert [t for e in events for t in e.new_tokens] == plain  # the seed's sample, drafts or not


def _rag_prompts(tok, n, data=SHARED_DATA):
    """The first `n` rag.jsonl prompts (the LLMA paper's own retrieval set) with their passages; `data`:
    the shared data folder (the `shared_data` fixture, which fails where it is absent)."""
    from benchmarks.data import bench_prompts

    return bench_prompts(tok, data / "llma-rag" / "rag.jsonl", n)[1]


@pytest.mark.slow
@pytest.mark.shared_data("llma-rag/rag.jsonl")
def test_smollm_with_rows_identical_to_greedy_fp32(smollm, shared_data):
    """The real default model, fp32 on CPU, two rag.jsonl prompts: LLMA verifying 4 drafts per step
    gives greedy's tokens and needs no more forwards than with one draft."""
    rows = StaticBackend(smollm.model, block=16, cache_copies=4, max_len=2048)
    one = StaticBackend(smollm.model, block=16, max_len=2048)
    config = LLMAConfig(max_new_tokens=32)
    for p in _rag_prompts(smollm.tokenizer, 2, shared_data):
        greedy = Engine(smollm, backend=rows).generate(p.prompt, p.references, config.greedy()).tokens
        llma = Engine(smollm, backend=rows).generate(p.prompt, p.references, config)
        single = Engine(smollm, backend=one).generate(p.prompt, p.references, config)
        assert llma.tokens == greedy == single.tokens
        assert llma.stats.forward_passes <= single.stats.forward_passes


@pytest.mark.cuda
def test_cuda_graphs_with_rows_llma_bit_identical_to_greedy():
    loaded = _tiny(torch.bfloat16)
    loaded.model.to("cuda")
    loaded.device = torch.device("cuda")
    backend = select_backend(loaded.model, EngineOptions("static-graphs", cache_copies=4))
    assert backend.name.endswith("+rows4") and backend.graphs
    events = llma_on_pieces(loaded, backend, seed=11)[-1]
    assert max(e.candidates for e in events) > 1
