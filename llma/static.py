"""Static-shape backend for Llama-family models: preallocated KV cache, fixed query block, CUDA graphs.

On a GPU a small model's decoding step is bound by kernel launches, not arithmetic: eager Hugging Face
decoding costs the same whether a forward verifies 1 token or 64. And in bf16 a forward over 1 token
and one over 10 run kernels of different shapes whose logits differ in the last bits, so a drafted
token can flip an argmax that plain greedy would not have flipped.

Here every decoding step, greedy or LLMA, is one forward over a fixed block of `block` query slots:
the last token, the drafted tokens, then padding. Every step runs the same kernels with the same
shapes, and each row's result depends only on its own token and the cache, so LLMA through this
backend is bit-identical to greedy through it, in any dtype. The KV cache is preallocated
([layers, kv_heads, capacity, head_dim]) and written by position; `trim` only moves the position:
a query never sees keys past its own position, so stale or padding entries are never read.
Attention runs over a fixed key length L per sequence (a power-of-two bucket chosen at prefill from
the prompt and the reserved new tokens), so on CUDA each (block, L) step is captured once in a CUDA
graph and replayed. The prefill runs eagerly: one causal forward over the prompt.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from collections import namedtuple

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from llma.backend import Backend, HFBackend, context_length_of

log = logging.getLogger(__name__)

FAMILY = ("llama", "qwen2", "mistral")
ROPE_TYPES = ("default", "linear", "llama3", "yarn")  # fixed frequencies: one table serves every position
BACKENDS = ("auto", "hf", "static", "static-graphs")
DEFAULT_BLOCK = 32  # the last token and up to 31 drafted tokens (a multiple of 8: no ragged GEMM tile rows)
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
    if any(t != "full_attention" for t in layer_types) or (isinstance(window, int) and window < context_length_of(model)):
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
    return StaticBackend(model, graphs=choice != "static", **options)


# One layer's weights; q, k and v (and gate and up) projections in one matrix each: one GEMM each.
_Layer = namedtuple("_Layer", "in_norm qkv qkv_bias o_t o_bias post_norm gate_up down_t")


class StaticBackend:
    """The Backend protocol over a static KV cache and fixed-shape steps (see the module docstring)."""

    def __init__(self, model: PreTrainedModel, *, block: int = DEFAULT_BLOCK, graphs: bool | None = None,
                 max_len: int | None = None, min_bucket: int = 128) -> None:
        reason = unsupported_reason(model)
        if reason is not None:
            raise ValueError(f"StaticBackend cannot run {type(model).__name__}: {reason}")
        c, inner = model.config, model.model
        self.device, self.block, self.min_bucket = model.device, block, min_bucket
        self.graphs = self.device.type == "cuda" if graphs is None else graphs
        if self.graphs and self.device.type != "cuda":
            raise ValueError("CUDA graphs need a CUDA device")
        self.name = "static-graphs" if self.graphs else "static"
        self._context_length = min(context_length_of(model), max_len or 16384)
        attn = inner.layers[0].self_attn
        self.heads, self.kv_heads = c.num_attention_heads, c.num_key_value_heads
        self.head_dim = getattr(c, "head_dim", None) or c.hidden_size // self.heads
        self.scale = getattr(attn, "scaling", self.head_dim ** -0.5)
        self.eps = inner.norm.variance_epsilon if hasattr(inner.norm, "variance_epsilon") else c.rms_norm_eps
        self.dtype = model.lm_head.weight.dtype
        with torch.no_grad():
            self.embed, self.lm_head, self.norm = (w.detach() for w in (
                inner.embed_tokens.weight, model.lm_head.weight, inner.norm.weight))
            self.layers = [self._layer(layer) for layer in inner.layers]
            # Capacity: any block starting inside the context fits; a multiple of 64 keeps views aligned.
            self.capacity = -(-(self._context_length + block) // 64) * 64
            shape = (len(self.layers), self.kv_heads, self.capacity, self.head_dim)
            self.k = torch.zeros(shape, dtype=self.dtype, device=self.device)
            self.v = torch.zeros(shape, dtype=self.dtype, device=self.device)
            self.arange = torch.arange(self.capacity, device=self.device)
            self.cos, self.sin = self._rope_tables(model)
        self._len, self._reserve, self._L = 0, 256, min_bucket
        self._graphs: dict[tuple[int, int], tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]] = {}

    @staticmethod
    def _layer(layer: torch.nn.Module) -> _Layer:
        a, mlp = layer.self_attn, layer.mlp
        projs = (a.q_proj, a.k_proj, a.v_proj)
        bias = torch.cat([p.bias for p in projs]) if a.q_proj.bias is not None else None
        return _Layer(layer.input_layernorm.weight.detach(), torch.cat([p.weight for p in projs]), bias,
                      a.o_proj.weight.detach().t(), None if a.o_proj.bias is None else a.o_proj.bias.detach(),
                      layer.post_attention_layernorm.weight.detach(),
                      torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]), mlp.down_proj.weight.detach().t())

    def _rope_tables(self, model: PreTrainedModel) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin per position, as the model's own rotary module computes them (HF's values)."""
        positions = self.arange[None]
        dummy = torch.zeros(1, dtype=self.dtype, device=self.device)
        cos, sin = (t[0] for t in model.model.rotary_emb(dummy, positions))
        half = self.head_dim // 2
        # rotate_half(x) * sin == swap_halves(x) * [-sin_1, sin_2], exactly (a sign flip is exact).
        return cos.contiguous(), torch.cat((-sin[:, :half], sin[:, half:]), -1).contiguous()

    # --- the Backend protocol ---
    @property
    def context_length(self) -> int:
        return self._context_length

    @property
    def cached(self) -> int:
        return self._len

    @property
    def max_draft(self) -> int:
        """Drafts up to this length fit one block with the last token (longer ones take more blocks)."""
        return self.block - 1

    def reserve(self, new_tokens: int) -> None:
        """Tokens the next generation may add after its prompt: sizes the attention length L, fixed for
        the sequence (greedy and LLMA see the same L); one that outgrows it moves to a larger L midway."""
        self._reserve = max(0, int(new_tokens))

    def _bucket(self, need: int) -> int:
        size = self.min_bucket
        while size < need:
            size *= 2
        return min(size, self.capacity)

    @torch.no_grad()
    def prefill(self, ids: Sequence[int]) -> torch.Tensor:
        n = len(ids)
        if not 0 < n <= self._context_length:
            raise ValueError(f"prefill needs 1 to {self._context_length} tokens, got {n}")
        self._L = self._bucket(n + self._reserve + self.block)
        tokens = torch.tensor(list(ids), dtype=torch.long, device=self.device)
        x = self._layers(F.embedding(tokens, self.embed), self.cos[:n, None], self.sin[:n, None],
                         self._prefill_attention(n))
        self._len = n
        return F.linear(x[-1:], self.lm_head).float()

    @torch.no_grad()
    def forward(self, ids: Sequence[int]) -> torch.Tensor:
        ids = list(ids)
        if not ids:
            raise ValueError("forward() needs at least one token")
        if self._len == 0:
            raise RuntimeError("forward() before prefill()")
        if self._len + len(ids) > self._context_length:
            raise ValueError(f"{self._len} cached + {len(ids)} tokens exceed the context {self._context_length}")
        rows = []
        for start in range(0, len(ids), self.block):
            chunk = ids[start : start + self.block]
            pos = self._len + start
            if pos + self.block > self._L:
                self._L = self._bucket(pos + self.block)
                log.debug("sequence outgrew its reservation; attention length now %d", self._L)
            out = self._run(chunk + [0] * (self.block - len(chunk)), pos, self.block, self._L)
            rows.append(out[: len(chunk)].to(torch.float32, copy=True))
        self._len += len(ids)
        return rows[0] if len(rows) == 1 else torch.cat(rows)

    def trim(self, length: int) -> None:
        if not 0 <= length <= self._len:
            raise ValueError(f"cannot trim a cache of {self._len} tokens to {length}")
        self._len = length  # rollback is moving the position: nothing is copied or cleared

    # --- the model ---
    def _layers(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                attend: Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
        n, h, kv, half = x.shape[0], self.heads, self.kv_heads, self.head_dim // 2
        width = x.shape[-1]
        for i, w in enumerate(self.layers):
            y = F.rms_norm(x, (width,), w.in_norm, self.eps)
            qkv = F.linear(y, w.qkv, w.qkv_bias).view(n, h + 2 * kv, self.head_dim)
            qk = qkv[:, : h + kv]
            qk = qk * cos + torch.cat((qk[..., half:], qk[..., :half]), -1) * sin
            x = torch.addmm(x, attend(i, qk[:, :h], qk[:, h:], qkv[:, h + kv :]), w.o_t)
            if w.o_bias is not None:
                x = x + w.o_bias
            gate, up = F.linear(F.rms_norm(x, (width,), w.post_norm, self.eps), w.gate_up).chunk(2, -1)
            x = torch.addmm(x, F.silu(gate) * up, w.down_t)
        return F.rms_norm(x, (width,), self.norm, self.eps)

    def _prefill_attention(self, n: int) -> Callable[..., torch.Tensor]:
        groups = self.heads // self.kv_heads

        def attend(i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            k, v = k.transpose(0, 1), v.transpose(0, 1)  # [kv_heads, n, head_dim]
            self.k[i, :, :n], self.v[i, :, :n] = k, v
            if groups > 1:
                k, v = k.repeat_interleave(groups, 0), v.repeat_interleave(groups, 0)
            out = F.scaled_dot_product_attention(q.transpose(0, 1)[None], k[None], v[None], is_causal=True,
                                                 scale=self.scale)
            return out[0].transpose(0, 1).reshape(n, -1)

        return attend

    def _step(self, inp: torch.Tensor, length: int) -> torch.Tensor:
        """One fixed-shape step: `inp` = [block ids..., start position]; returns [block, vocab] logits.

        No host synchronisation and no data-dependent shapes inside: safe to capture in a CUDA graph.
        """
        b, kv, d = inp.shape[0] - 1, self.kv_heads, self.head_dim
        groups = self.heads // kv
        positions = inp[b] + self.arange[:b]
        allowed = self.arange[:length][None, :] <= positions[:, None]  # [block, L]: causal by position
        mask = torch.zeros(allowed.shape, dtype=self.dtype, device=self.device).masked_fill_(~allowed, float("-inf"))
        mask = mask.repeat(groups, 1)[None, None]  # query rows are (group, slot): GQA without copying K/V

        def attend(i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            self.k[i].index_copy_(1, positions, k.transpose(0, 1))
            self.v[i].index_copy_(1, positions, v.transpose(0, 1))
            q = q.view(b, kv, groups, d).permute(1, 2, 0, 3).reshape(1, kv, groups * b, d)
            out = F.scaled_dot_product_attention(q, self.k[i, :, :length][None], self.v[i, :, :length][None],
                                                 attn_mask=mask, scale=self.scale)
            return out.view(kv, groups, b, d).permute(2, 0, 1, 3).reshape(b, -1)

        x = self._layers(F.embedding(inp[:b], self.embed), self.cos[positions][:, None],
                         self.sin[positions][:, None], attend)
        return F.linear(x, self.lm_head)

    def _run(self, block_ids: list[int], pos: int, block: int, length: int) -> torch.Tensor:
        inp = torch.tensor(block_ids + [pos], dtype=torch.long)
        if not self.graphs:
            return self._step(inp.to(self.device), length)
        graph, static_inp, out = self._graph(block, length, pos)
        static_inp.copy_(inp)
        graph.replay()
        return out

    def _graph(self, block: int, length: int, pos: int) -> tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]:
        """The captured step for (block, L), made on first use. Warm-up and capture write keys at
        positions >= `pos` (past the sequence), which later steps overwrite before reading."""
        key = (block, length)
        if key not in self._graphs:
            static_inp = torch.zeros(block + 1, dtype=torch.long, device=self.device)
            static_inp[block] = pos
            stream = torch.cuda.Stream(self.device)
            stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(stream):
                for _ in range(2):
                    self._step(static_inp, length)
            torch.cuda.current_stream(self.device).wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = self._step(static_inp, length)
            self._graphs[key] = (graph, static_inp, out)
            log.info("captured a CUDA graph for block %d, attention length %d", block, length)
        return self._graphs[key]
