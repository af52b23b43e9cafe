"""Which models the static backend runs, and the backend choice ('auto', 'hf', 'static', 'static-graphs')."""
from __future__ import annotations

import logging
import os

import torch
from transformers import PreTrainedModel

from llma.backend import Backend, HFBackend, context_length_of

log = logging.getLogger(__name__)

FAMILY = ("llama", "qwen2", "mistral")
ROPE_TYPES = ("default", "linear", "llama3", "yarn")  # fixed frequencies: one table serves every position
BACKENDS = ("auto", "hf", "static", "static-graphs")
DEFAULT_TREE = 4  # drafts packed per block on CUDA (see static_options)
_PARTS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
          "mlp.up_proj", "mlp.down_proj", "input_layernorm", "post_attention_layernorm")


def _get(module: object, dotted: str) -> object:
    for name in dotted.split("."):
        module = getattr(module, name, None)
    return module


def _rope_type(config: object) -> str:
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    return rope.get("rope_type", rope.get("type", "default")) if isinstance(rope, dict) else "unknown"


def unsupported_reason(model: PreTrainedModel) -> str | None:
    """Why the static backend cannot run `model` (None: it can)."""
    config, inner = model.config, getattr(model, "model", None)
    kind = getattr(config, "model_type", None)
    if kind not in FAMILY:
        return f"model type {kind!r} is not in the supported Llama family {FAMILY}"
    layers = getattr(inner, "layers", None)
    if not layers or None in (getattr(model, "lm_head", None), _get(inner, "embed_tokens"), _get(inner, "norm")):
        return f"{type(model).__name__} lacks the Llama module layout (model.layers, embed_tokens, norm, lm_head)"
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


def select_backend(model: PreTrainedModel, choice: str = "auto", **options: int) -> Backend:
    """'auto': static with CUDA graphs on a CUDA device when the model is supported, else the HF loop."""
    if choice not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {choice!r}")
    cuda = model.device.type == "cuda"
    if choice == "hf" or (choice == "auto" and not cuda):
        return HFBackend(model)
    if choice == "static-graphs" and not cuda:
        raise ValueError(f"CUDA graphs need a CUDA device; the model is on {model.device}")
    reason = unsupported_reason(model)
    if reason is not None:
        log.warning("static backend not used, falling back to the generic HF loop: %s", reason)
        return HFBackend(model)
    from llma.static.backend import StaticBackend

    graphs = choice != "static"
    return StaticBackend(model, graphs=graphs, **static_options(cuda, graphs, options))


def static_options(cuda: bool, graphs: bool, options: dict[str, int]) -> dict[str, object]:
    """StaticBackend's options: those given, else the environment's, else the defaults.

    LLMA_STATIC_ATTENTION: the attention kernel; LLMA_STATIC_COMPILE=1 or 0: torch.compile or not
    (graphs only; the default with split-KV attention on CUDA: 28% faster steps on the H200 for ~4 s
    more set-up, once per process; if compiling fails, the backend logs why and runs eagerly).
    benchmarks/run_gpu.sh chooses them on the GPU with `python -m llma.gpu_bench --choose`.
    LLMA_STATIC_ROWS: drafts verified side by side per step (StaticBackend's `rows`; flash attention
    takes one row, so the default kernel for several is split-KV). LLMA_STATIC_TREE: drafts packed
    into the one block per step (`tree`; split-KV or SDPA attention, as flash attention cannot read
    a draft's keys from its own slots). On CUDA with one row and split-KV attention the default is
    DEFAULT_TREE drafts packed: the fastest LLMA on every set measured on the H200 (benchmarks/GPU.md),
    for ~2% more per greedy step, and compiled.
    """
    options = dict(options)
    rows = _whole(options.pop("rows", None), "LLMA_STATIC_ROWS", "1")
    attention = os.environ.get("LLMA_STATIC_ATTENTION")
    packs = cuda and rows == 1 and attention in (None, "split")  # measured with split-KV attention only
    tree = _whole(options.pop("tree", None), "LLMA_STATIC_TREE", str(DEFAULT_TREE) if packs else "0")
    if attention is None:
        attention = "sdpa" if not cuda else "flash" if rows == 1 and not tree else "split"
    # torch.compile by default where it was measured: CUDA graphs with split-KV attention.
    compiles = "1" if cuda and graphs and attention == "split" else "0"
    return {"attention": attention, "compile": graphs and os.environ.get("LLMA_STATIC_COMPILE", compiles) == "1",
            "rows": rows, "tree": tree, **options}


def _whole(given: int | None, variable: str, default: str) -> int:
    """An option's value, else its environment variable's (a clear error if that is no whole number);
    StaticBackend checks the range."""
    if given is not None:
        return given
    value = os.environ.get(variable, default)
    if not value.isdigit():
        raise ValueError(f"{variable} must be a whole number (drafts per step), got {value!r}")
    return int(value)
