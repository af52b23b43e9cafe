"""The static backend beyond Llama itself (llma.static.family.FAMILY): Qwen2 (q/k/v biases) and Mistral.

Tiny random-weight models on CPU in fp32: the static backend's logits equal the HF backend's, its
greedy equals HF greedy, and LLMA through it equals that greedy, drafts and a packed tree included;
a sliding window shorter than the context runs on the static backend (tested with Qwen3 and
Gemma 3 in test_llma_static_families.py) and is refused, with its reason, by the batch engine's check.
"""
import logging

import pytest
import torch
from transformers import MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM

from llma.backend import HFBackend
from llma.engine import Engine, LLMAConfig
from llma.loading import LoadedModel
from llma.static import StaticBackend, unsupported_reason
from llma_fixtures import assert_near_exact, exact_twin

SHAPE = dict(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=256, initializer_range=0.5, tie_word_embeddings=False)


def _loaded(cls, config) -> LoadedModel:
    torch.manual_seed(0)
    return LoadedModel(cls(config).eval(), None, cls.__name__, torch.device("cpu"), torch.float32)


FAMILY = {
    "qwen2": lambda: _loaded(Qwen2ForCausalLM, Qwen2Config(**SHAPE)),
    "mistral": lambda: _loaded(MistralForCausalLM, MistralConfig(**SHAPE, sliding_window=None)),
}


@pytest.mark.parametrize("kind", FAMILY)
def test_family_logits_greedy_and_llma_equal_hf(kind):
    loaded = FAMILY[kind]()
    model = loaded.model
    assert model.config.model_type == kind and unsupported_reason(model) is None
    if kind == "qwen2":  # what sets Qwen2 apart: the q/k/v projections have biases
        assert model.model.layers[0].self_attn.q_proj.bias is not None
    hf, static, hf64 = HFBackend(model), StaticBackend(model, block=8), exact_twin(model)
    prompt, more = list(range(3, 23)), list(range(40, 52))  # 12 tokens: two blocks
    assert_near_exact(static.prefill(prompt), hf.prefill(prompt), hf64.prefill(prompt))
    assert_near_exact(static.forward(more), hf.forward(more), hf64.forward(more))

    config = LLMAConfig(min_n=1, k=7, adaptive=False, max_new_tokens=30)
    greedy = Engine(loaded, backend="hf").generate(prompt, None, config.greedy()).tokens
    refs = {"answer": greedy[2:], "noise": list(range(60, 90))}
    for backend in (StaticBackend(model, block=8), StaticBackend(model, block=8, packed_drafts=3)):
        engine = Engine(loaded, backend=backend)
        assert engine.generate(prompt, None, config.greedy()).tokens == greedy
        llma = engine.generate(prompt, refs, config)
        assert llma.tokens == greedy and llma.stats.accepted_tokens > 5


def test_a_sliding_window_runs_static_but_not_in_the_batch_arithmetic(caplog):
    loaded = _loaded(MistralForCausalLM, MistralConfig(**SHAPE, sliding_window=16))
    assert "sliding-window" in unsupported_reason(loaded.model)  # LlamaWeights.run alone: the batch engine
    assert unsupported_reason(loaded.model, full=True) is None
    with caplog.at_level(logging.WARNING, logger="llma.static"):
        assert isinstance(Engine(loaded, backend="static").backend, StaticBackend)
    assert "falling back" not in caplog.text
