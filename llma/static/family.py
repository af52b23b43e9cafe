"""Which models the static backend runs: the Llama family's module layout and config rules, and the
few ways its members depart from Llama's arithmetic (`Arithmetic`)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedModel

from llma.backend import context_length_of

# Llama's layout and arithmetic, and members that add to it: Qwen2 (q/k/v biases), Qwen3 (q/k norms),
# Mistral (an optional sliding window), Gemma 3's text model (see Arithmetic).
FAMILY = ("llama", "qwen2", "mistral", "qwen3", "gemma3_text")
GEMMA = ("gemma3_text",)
MULTIMODAL = ("gemma3",)  # Gemma3ForConditionalGeneration (gemma-3-4b and up): its text decoder runs
MOE = ("qwen3_moe", "qwen2_moe", "mixtral")
ROPE_TYPES = ("default", "linear", "llama3", "yarn")  # fixed frequencies: one table serves every position
ACTIVATIONS = ("silu", "gelu_pytorch_tanh")
_PARTS = (
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj", "input_layernorm", "post_attention_layernorm",
)
_GEMMA_PARTS = ("pre_feedforward_layernorm", "post_feedforward_layernorm", "self_attn.q_norm",
                "self_attn.k_norm")


@dataclass(frozen=True)
class Arithmetic:
    """How a family member's layers depart from Llama's.

    gemma: Gemma's layout: RMSNorms scaling by (1 + weight) in fp32, a norm after the attention and
      after the MLP as well as before each, embeddings scaled by sqrt(hidden) in the weights' dtype,
      a rotary table per layer type (`rope_parameters[layer_type]`), optional final logit soft-capping.
    qk_norm: an RMSNorm over each head of q and k before the rotary embedding (Qwen3, Gemma 3).
    activation: the gated MLP's activation, one of ACTIVATIONS.
    windows: per layer, its sliding window W (a query at position p sees the keys at (p - W, p],
      as transformers' sliding_window_overlay), or None for full attention.
    softcap: logits = softcap * tanh(logits / softcap) when set (Gemma's final_logit_softcapping).
    """

    gemma: bool
    qk_norm: bool
    activation: str
    windows: tuple[int | None, ...]
    softcap: float | None

    @property
    def beyond_run(self) -> bool:
        """Needs more of its caller than `LlamaWeights.run` (windows in the attention, scaled
        embeddings, per-layer rotary rows, soft-capped logits)."""
        return self.gemma or any(w is not None for w in self.windows) or self.softcap is not None


def _get(module: object, dotted: str) -> object:
    for name in dotted.split("."):
        module = getattr(module, name, None)
    return module


def text_model(model: PreTrainedModel) -> tuple[object, torch.nn.Module | None]:
    """The text decoder's config and module: `model.model` of a causal LM; the language model of
    Gemma 3's multimodal class (its text decoding: the same layers, embeddings and head)."""
    if getattr(model.config, "model_type", None) in MULTIMODAL:
        return model.config.get_text_config(), getattr(model.model, "language_model", None)
    return model.config, getattr(model, "model", None)


def _rope_types(config: object) -> list[str]:
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if not isinstance(rope, dict):
        return ["unknown"]
    tables = [r for r in rope.values() if isinstance(r, dict)] if config.model_type in GEMMA else [rope]
    return [r.get("rope_type", r.get("type", "default")) for r in tables or [{}]]


def _activation(config: object) -> str:
    return getattr(config, "hidden_activation", None) or getattr(config, "hidden_act", "silu")


def layer_windows(model: PreTrainedModel) -> tuple[int | None, ...]:
    """Each layer's sliding window (None: full attention); a window as long as the context is none."""
    config = text_model(model)[0]
    n = config.num_hidden_layers
    window = getattr(config, "sliding_window", None)
    if not isinstance(window, int) or window <= 0 or window >= context_length_of(model):
        return (None,) * n
    if config.model_type == "mistral":  # every layer (Mistral ignores layer_types)
        return (window,) * n
    types = getattr(config, "layer_types", None) or ("full_attention",) * n
    return tuple(window if t == "sliding_attention" else None for t in types)


def arithmetic(model: PreTrainedModel) -> Arithmetic:
    """`model`'s departures from Llama's arithmetic (call after `unsupported_reason` says None)."""
    config, inner = text_model(model)
    gemma = config.model_type in GEMMA
    # Gemma 3's multimodal class leaves its logits uncapped (its forward has no soft-capping).
    capped = gemma and model.config.model_type not in MULTIMODAL
    softcap = getattr(config, "final_logit_softcapping", None) if capped else None
    return Arithmetic(gemma, _get(inner.layers[0], "self_attn.q_norm") is not None, _activation(config),
                      layer_windows(model), softcap)


def unsupported_reason(model: PreTrainedModel, full: bool = False) -> str | None:
    """Why the static arithmetic cannot run `model` (None: it can).

    `full`: the caller does all `Arithmetic` asks (the static backend: sliding windows, Gemma 3);
    else only what `LlamaWeights.run` does by itself (Llama, Qwen2, Qwen3, Mistral without a window:
    the batch engine)."""
    config, inner = text_model(model)
    kind = getattr(config, "model_type", None)
    if kind in MOE:
        return f"model type {kind!r}: mixture-of-experts layers (the static arithmetic has dense MLPs only)"
    if kind not in FAMILY:
        return f"model type {kind!r} is not in the supported Llama family {FAMILY}"
    layers = getattr(inner, "layers", None)
    parts = (getattr(model, "lm_head", None), _get(inner, "embed_tokens"), _get(inner, "norm"))
    if not layers or None in parts:
        return (f"{type(model).__name__} lacks the Llama module layout "
                "(model.layers, embed_tokens, norm, lm_head)")
    missing = [p for p in _PARTS + (_GEMMA_PARTS if kind in GEMMA else ()) if _get(layers[0], p) is None]
    if missing:
        return f"{type(model).__name__} layers lack {missing}"
    if _activation(config) not in ACTIVATIONS:
        return f"activation {_activation(config)!r} (supported: {ACTIVATIONS})"
    if getattr(config, "mlp_bias", False) or _get(layers[0], "mlp.down_proj.bias") is not None:
        return "MLP biases"
    bad_rope = [r for r in _rope_types(config) if r not in ROPE_TYPES]
    if bad_rope:
        return f"rope type {bad_rope[0]!r} (supported: {ROPE_TYPES})"
    if _get(inner, "rotary_emb") is None:
        return "no model-level rotary_emb (transformers older than 4.45?)"
    if getattr(config, "attn_logit_softcapping", None) is not None:
        return "attention logit soft-capping"
    if getattr(config, "use_bidirectional_attention", False):
        return "bidirectional attention"
    if model.lm_head.weight.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        return f"weights in {model.lm_head.weight.dtype} (quantized?)"
    if not full:
        need = arithmetic(model)
        if any(w is not None for w in need.windows):
            return "sliding-window attention (the static backend runs it; this engine does not)"
        if need.beyond_run:
            return f"model type {kind!r}: Gemma's embeddings, rotary tables and logits (static backend only)"
    return None
