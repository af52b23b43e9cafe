"""Which models the static backend runs: the Llama family's module layout and config rules."""
from __future__ import annotations

import torch
from transformers import PreTrainedModel

from llma.backend import context_length_of

FAMILY = ("llama", "qwen2", "mistral")
ROPE_TYPES = ("default", "linear", "llama3", "yarn")  # fixed frequencies: one table serves every position
_PARTS = (
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj", "input_layernorm", "post_attention_layernorm",
)


def _get(module: object, dotted: str) -> object:
    for name in dotted.split("."):
        module = getattr(module, name, None)
    return module


def _rope_type(config: object) -> str:
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    return rope.get("rope_type", rope.get("type", "default")) if isinstance(rope, dict) else "unknown"


def unsupported_reason(model: PreTrainedModel) -> str | None:
    """Why the static backend cannot run `model` (None: it can)."""
    config = model.config
    inner = getattr(model, "model", None)
    kind = getattr(config, "model_type", None)
    if kind not in FAMILY:
        return f"model type {kind!r} is not in the supported Llama family {FAMILY}"
    layers = getattr(inner, "layers", None)
    parts = (getattr(model, "lm_head", None), _get(inner, "embed_tokens"), _get(inner, "norm"))
    if not layers or None in parts:
        return (f"{type(model).__name__} lacks the Llama module layout "
                "(model.layers, embed_tokens, norm, lm_head)")
    missing = [p for p in _PARTS if _get(layers[0], p) is None]
    if missing:
        return f"{type(model).__name__} layers lack {missing}"
    if getattr(config, "hidden_act", "silu") != "silu":
        return f"activation {config.hidden_act!r} (only silu)"
    if getattr(config, "mlp_bias", False) or _get(layers[0], "mlp.down_proj.bias") is not None:
        return "MLP biases"
    rope = _rope_type(config)
    if rope not in ROPE_TYPES:
        return f"rope type {rope!r} (supported: {ROPE_TYPES})"
    if _get(inner, "rotary_emb") is None:
        return "no model-level rotary_emb (transformers older than 4.45?)"
    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None) or ()
    if any(t != "full_attention" for t in layer_types) or (
            isinstance(window, int) and window < context_length_of(model)):
        return "sliding-window attention"
    if model.lm_head.weight.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        return f"weights in {model.lm_head.weight.dtype} (quantized?)"
    return None
