"""A Llama-family model's weights and per-layer arithmetic, as the static backend's steps use them."""
from __future__ import annotations

import logging
from collections import namedtuple
from collections.abc import Callable

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

log = logging.getLogger(__name__)

# q, k and v (and gate and up) projections in one matrix each: one GEMM each; o and down transposed
# for addmm (the residual added in the same kernel).
Layer = namedtuple("Layer", "in_norm qkv qkv_bias o_t o_bias post_norm gate_up down_t")


def pack_layer(layer: torch.nn.Module) -> Layer:
    a, mlp = layer.self_attn, layer.mlp
    projs = (a.q_proj, a.k_proj, a.v_proj)
    bias = torch.cat([p.bias for p in projs]) if a.q_proj.bias is not None else None
    return Layer(layer.input_layernorm.weight.detach(), torch.cat([p.weight for p in projs]), bias,
                 a.o_proj.weight.detach().t(), None if a.o_proj.bias is None else a.o_proj.bias.detach(),
                 layer.post_attention_layernorm.weight.detach(),
                 torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]), mlp.down_proj.weight.detach().t())


class Compiled:
    """`fn` through torch.compile, or `fn` itself for good if compiling it fails (a missing compiler
    toolchain, an unsupported GPU): logged once, the results the same up to rounding. The first calls
    come from a CUDA graph's warm-up, never inside a capture (llma.static.graphs.capture).
    `rows`: the positions of the arguments whose first dimension is the token count, compiled as a
    dynamic size (one compile for every prompt length); none: every shape static (the steps')."""

    def __init__(self, fn: Callable[..., torch.Tensor], rows: tuple[int, ...] = ()) -> None:
        self.fn, self.rows = fn, rows
        self._compiled = torch.compile(fn, fullgraph=True, dynamic=None if rows else False)

    def __call__(self, *args: torch.Tensor) -> object:
        if self._compiled is not None:
            try:
                for i in self.rows:  # maybe_: a size the compiler specialises stays correct, only slower
                    torch._dynamo.maybe_mark_dynamic(args[i], 0)
                return self._compiled(*args)
            except Exception as err:  # noqa: BLE001 (any failure to compile: run eagerly)
                log.warning("torch.compile of %s failed, running it eagerly: %s", self.fn.__name__,
                            str(err).split("\n")[0][:300])
                self._compiled = None
        return self.fn(*args)


class LlamaWeights:
    """The model's weights, packed, its rotary tables and the layers' arithmetic (pure tensor code:
    the static backend supplies the attention and the KV cache)."""

    def _load(self, model: PreTrainedModel, positions: int, compile: bool) -> None:
        """Take `model`'s weights; rotary tables for `positions`; `compile`: torch.compile the pure
        parts of each layer, for the steps (static shapes) and for the prefill (any prompt length)."""
        c, inner = model.config, model.model
        self.heads, self.kv_heads = c.num_attention_heads, c.num_key_value_heads
        self.head_dim = getattr(c, "head_dim", None) or c.hidden_size // self.heads
        self.scale = getattr(inner.layers[0].self_attn, "scaling", self.head_dim ** -0.5)
        self.eps = inner.norm.variance_epsilon if hasattr(inner.norm, "variance_epsilon") else c.rms_norm_eps
        self.dtype = model.lm_head.weight.dtype
        self.embed, self.lm_head, self.norm = (w.detach() for w in (
            inner.embed_tokens.weight, model.lm_head.weight, inner.norm.weight))
        self.layers = [pack_layer(layer) for layer in inner.layers]
        self.arange = torch.arange(positions, device=model.device)
        self.cos, self.sin = self._rope_tables(model)
        self._pre_c, self._post_c = ((Compiled(f) for f in (self._pre, self._post)) if compile
                                     else (self._pre, self._post))
        # The prefill's own functions (their own compile caches, apart from the steps' static ones):
        # eager, each layer's norms, rotary and gated MLP are many small kernels; compiled, a few fused.
        self._pre_p, self._post_p = ((Compiled(self._prefill_pre, (0, 4, 5)), Compiled(self._prefill_post, (0, 1)))
                                     if compile else (self._pre, self._post))

    def _rope_tables(self, model: PreTrainedModel) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin per position, as the model's own rotary module computes them (HF's values)."""
        positions = self.arange[None]
        dummy = torch.zeros(1, dtype=self.dtype, device=model.device)
        cos, sin = (t[0] for t in model.model.rotary_emb(dummy, positions))
        half = self.head_dim // 2
        # rotate_half(x) * sin == swap_halves(x) * [-sin_1, sin_2], exactly (a sign flip is exact).
        return cos.contiguous(), torch.cat((-sin[:, :half], sin[:, half:]), -1).contiguous()

    def _layers(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                attend: Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
                step: bool = False) -> torch.Tensor:
        pre, post = (self._pre_c, self._post_c) if step else (self._pre_p, self._post_p)
        for i, w in enumerate(self.layers):
            q, k, v = pre(x, w.in_norm, w.qkv, w.qkv_bias, cos, sin)
            x = post(x, attend(i, q, k, v), w.o_t, w.o_bias, w.post_norm, w.gate_up, w.down_t)
        return F.rms_norm(x, (x.shape[-1],), self.norm, self.eps)

    def _pre(self, x, in_norm, qkv_w, qkv_b, cos, sin):  # noqa: ANN001, ANN202 (pure: compiled as is)
        """Norm, q/k/v projection, rotary embedding: q [n, heads, d], k and v [n, kv_heads, d]."""
        n, h, kv, half = x.shape[0], self.heads, self.kv_heads, self.head_dim // 2
        y = F.rms_norm(x, (x.shape[-1],), in_norm, self.eps)
        qkv = F.linear(y, qkv_w, qkv_b).view(n, h + 2 * kv, self.head_dim)
        qk = qkv[:, : h + kv]
        qk = qk * cos + torch.cat((qk[..., half:], qk[..., :half]), -1) * sin
        return qk[:, :h], qk[:, h:], qkv[:, h + kv :]

    def _prefill_pre(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self._pre(*args)

    def _prefill_post(self, *args: torch.Tensor) -> torch.Tensor:
        return self._post(*args)

    def _post(self, x, attn, o_t, o_bias, post_norm, gate_up, down_t):  # noqa: ANN001, ANN202
        """Output projection and residual, norm, gated MLP and residual."""
        x = torch.addmm(x, attn, o_t)
        if o_bias is not None:
            x = x + o_bias
        gate, up = F.linear(F.rms_norm(x, (x.shape[-1],), post_norm, self.eps), gate_up).chunk(2, -1)
        return torch.addmm(x, F.silu(gate) * up, down_t)
