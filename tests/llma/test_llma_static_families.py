"""The static backend on Qwen3 and Gemma 3 (and Mistral with a sliding window): tiny random-weight
models (family_models.py) on CPU in fp32.

For each: the static backend's logits are as close to the exact (fp64) logits as HF's own fp32 ones
(`assert_near_exact`), for a prefill longer than the sliding window, for steps after it and for
packed drafts (each draft's rows against HF fed that draft alone), after `keep` too; greedy through
it equals HF `model.generate` (its own sliding-window cache) across the window, and LLMA through it
equals that greedy, one draft or several packed per block. The window is checked to matter (HF's
logits move without it), so a backend ignoring it fails here.
"""
import logging

import pytest
import torch
from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

from family_models import FAMILIES, SHAPE, WINDOW, tiny_gemma3, tiny_gemma3_multimodal, tiny_qwen3
from llma.backend import HFBackend
from llma.engine import Engine, LLMAConfig
from llma.loading import LoadedModel
from llma.static import StaticBackend, select_backend, unsupported_reason
from llma.static.family import arithmetic
from llma.options import EngineOptions
from llma_fixtures import assert_near_exact, exact_twin

PROMPT = [(7 * i + 3) % 97 for i in range(40)]  # 40 tokens: past the 16-token window
MORE = list(range(40, 52))  # 12 tokens: two blocks of 8


def _hf_greedy(model, prompt, n):
    out = model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=n, min_new_tokens=n,
                         attention_mask=torch.ones(1, len(prompt), dtype=torch.long), eos_token_id=None)
    return out[0, len(prompt):].tolist()


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request):
    return request.param, FAMILIES[request.param]()


def test_what_sets_each_family_apart_is_seen(family):
    kind, loaded = family
    need = arithmetic(loaded.model)
    assert unsupported_reason(loaded.model, full=True) is None
    windows = [w for w in need.windows if w is not None]
    if kind == "qwen3":
        assert need.qk_norm and not need.gemma and not windows and unsupported_reason(loaded.model) is None
    if kind.startswith("gemma3"):
        assert need.gemma and need.qk_norm and need.activation == "gelu_pytorch_tanh"
        assert need.windows == (WINDOW, WINDOW, None, WINDOW, WINDOW, None)  # a global layer every 3
        assert need.softcap == (10.0 if kind == "gemma3-tied-softcap" else None)
        tied = loaded.model.lm_head.weight is loaded.model.model.embed_tokens.weight
        assert tied == (kind == "gemma3-tied-softcap")
    if kind == "mistral-window":
        assert need.windows == (WINDOW, WINDOW)
    if windows or need.gemma:  # the batch engine's arithmetic (LlamaWeights.run alone) refuses them
        assert "static backend" in unsupported_reason(loaded.model)


def test_the_window_matters_to_the_reference(family):
    """HF's own logits move when the window is lifted: a backend that ignored it would fail below."""
    kind, loaded = family
    if kind == "qwen3":
        pytest.skip("no window")
    model = loaded.model
    with torch.no_grad():
        windowed = model(input_ids=torch.tensor([PROMPT])).logits[0, -1]
        model.config.sliding_window = 10 ** 6
        try:
            full = model(input_ids=torch.tensor([PROMPT])).logits[0, -1]
        finally:
            model.config.sliding_window = WINDOW
    assert (windowed - full).abs().max() > 0.1


def test_prefill_and_steps_match_hf(family):
    _, loaded = family
    model = loaded.model
    hf, static, hf64 = HFBackend(model), StaticBackend(model, block=8), exact_twin(model)
    for prompt in (PROMPT[:5], PROMPT):  # shorter and longer than the window
        assert_near_exact(static.prefill(prompt), hf.prefill(prompt), hf64.prefill(prompt))
        assert_near_exact(static.forward(MORE), hf.forward(MORE), hf64.forward(MORE))
    for n in (44, 40):  # trimmed back: later steps see the same keys again
        static.trim(n), hf.trim(n), hf64.trim(n)
        assert_near_exact(static.forward(MORE[:5]), hf.forward(MORE[:5]), hf64.forward(MORE[:5]))


@pytest.mark.parametrize("options", [dict(packed_drafts=4), dict(cache_copies=4, attention="bmm")],
                         ids=["packed-sdpa", "copies-bmm"])
def test_several_drafts_match_hf_fed_each_alone(family, options):
    """Drafts packed into one block (or one per cache copy, through bmm), the later rows crossing the
    window's edge; after `keep`, the next step sees the kept draft's keys where they belong."""
    _, loaded = family
    model = loaded.model
    hf, hf64 = HFBackend(model), exact_twin(model)
    static = StaticBackend(model, block=16, **options)
    rows = [[5, 6, 7, 8, 9, 10, 11], [5, 12, 13], [5, 14], [5, 15, 16]]
    static.prefill(PROMPT)
    hf.prefill(PROMPT), hf64.prefill(PROMPT)
    got = static.forward_rows(rows)
    for i, row in enumerate(rows):
        assert_near_exact(got[i, : len(row)], hf.forward(row), hf64.forward(row))
        hf.trim(len(PROMPT)), hf64.trim(len(PROMPT))
    static.keep(3, len(PROMPT) + 3)  # the last draft, whole (packed: its keys move after the root)
    hf.forward(rows[3]), hf64.forward(rows[3])
    assert_near_exact(static.forward(MORE), hf.forward(MORE), hf64.forward(MORE))


def test_greedy_equals_generate_and_llma_equals_greedy(family):
    """Prompts shorter and longer than the window, 40 new tokens (the generation crosses it)."""
    kind, loaded = family
    if kind == "gemma3-tied-softcap":
        pytest.skip("a tied head at random weights repeats one token: its logits are checked above")
    config = LLMAConfig(min_n=1, k=7, adaptive=False, max_new_tokens=40, repetition_stop=False)
    for prompt in (PROMPT[:12], PROMPT):
        expected = _hf_greedy(loaded.model, prompt, 40)
        refs = {"answer": expected[2:], "noise": list(range(60, 90))}
        for backend in (StaticBackend(loaded.model, block=8), StaticBackend(loaded.model, block=8, packed_drafts=3)):
            engine = Engine(loaded, backend=backend)
            assert engine.generate(prompt, None, config.greedy()).tokens == expected
            llma = engine.generate(prompt, refs, config)
            assert llma.tokens == expected and llma.stats.accepted_tokens > 10


def test_auto_selection_takes_the_static_backend_for_the_new_families():
    for loaded in (tiny_qwen3(), tiny_gemma3()):
        backend = select_backend(loaded.model, EngineOptions(backend="static"))
        assert isinstance(backend, StaticBackend)


def test_moe_stays_on_the_hf_loop_with_its_reason(caplog):
    torch.manual_seed(0)
    config = Qwen3MoeConfig(**SHAPE, num_hidden_layers=2, num_experts=4, num_experts_per_tok=2,
                            moe_intermediate_size=32, head_dim=16)
    loaded = LoadedModel(Qwen3MoeForCausalLM(config).eval(), None, "tiny-qwen3-moe", torch.device("cpu"),
                         torch.float32)
    assert "mixture-of-experts" in unsupported_reason(loaded.model, full=True)
    with caplog.at_level(logging.WARNING, logger="llma.static"):
        assert isinstance(Engine(loaded, backend="static").backend, HFBackend)
    assert "mixture-of-experts" in caplog.text


def test_the_batch_engine_runs_qwen3_as_hf_does():
    """Qwen3 needs nothing of LlamaWeights' callers (its q/k norms are inside `run`), so the batch
    engine, which checks `unsupported_reason` without `full`, takes it: its output equals HF greedy."""
    from llma.batch import BatchEngine, CostModel

    loaded = tiny_qwen3()
    engine = BatchEngine(loaded, slots=2, cost=CostModel([(16, 1.0), (512, 32.0)]))
    try:
        prompt = PROMPT[:12]
        expected = _hf_greedy(loaded.model, prompt, 24)
        config = LLMAConfig(max_new_tokens=24, repetition_stop=False)
        assert engine.generate(prompt, None, config.greedy()).tokens == expected
        assert engine.generate(prompt, {"answer": expected[2:]}, config).tokens == expected
    finally:
        engine.close()


def test_gemma3_multimodal_class_decodes_text_through_the_static_backend():
    """gemma-3-4b and larger load as Gemma3ForConditionalGeneration: its text decoder runs on the
    static backend (logits as HF's, greedy as `generate`, LLMA as greedy); the batch engine refuses it."""
    loaded = tiny_gemma3_multimodal()
    model = loaded.model
    assert model.config.model_type == "gemma3" and unsupported_reason(model, full=True) is None
    assert "static backend" in unsupported_reason(model)
    hf, static, hf64 = HFBackend(model), StaticBackend(model, block=8, packed_drafts=3), exact_twin(model)
    assert_near_exact(static.prefill(PROMPT), hf.prefill(PROMPT), hf64.prefill(PROMPT))
    assert_near_exact(static.forward(MORE), hf.forward(MORE), hf64.forward(MORE))
    expected = _hf_greedy(model, PROMPT, 30)
    engine = Engine(loaded, backend=static)
    config = LLMAConfig(min_n=1, k=7, adaptive=False, max_new_tokens=30, repetition_stop=False)
    assert engine.generate(PROMPT, None, config.greedy()).tokens == expected
    assert engine.generate(PROMPT, {"answer": expected[2:]}, config).tokens == expected
