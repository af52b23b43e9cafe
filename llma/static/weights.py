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
    a = layer.self_attn
    mlp = layer.mlp
    projs = (a.q_proj, a.k_proj, a.v_proj)
    bias = torch.cat([p.bias for p in projs]) if a.q_proj.bias is not None else None
    o_bias = None if a.o_proj.bias is None else a.o_proj.bias.detach()
    return Layer(layer.input_layernorm.weight.detach(), torch.cat([p.weight for p in projs]), bias,
                 a.o_proj.weight.detach().t(), o_bias, layer.post_attention_layernorm.weight.detach(),
                 torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]), mlp.down_proj.weight.detach().t())


class Compiled:
    """`fn` through torch.compile, or `fn` itself for good if compiling it fails (a missing compiler
    toolchain, an unsupported GPU): logged once, the results the same up to rounding. The first calls
    come from a CUDA graph's warm-up, never inside a capture (llma.static.graphs.capture).
    `rows`: the positions of the arguments whose first dimension is the token count, compiled as a
    dynamic size (one compile for every prompt length); none: every shape static (the steps')."""

    def __init__(self, fn: Callable[..., torch.Tensor], rows: tuple[int, ...] = ()) -> None:
        self.fn = fn
        self.rows = rows
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
    """A Llama-family model's weights, packed, its rotary tables and the layers' arithmetic (pure
    tensor code: the caller supplies the attention, which also writes the KV cache).

    `positions`: rows of the rotary tables; `compile`: torch.compile the pure parts of each layer,
    for the steps (static shapes) and for the prefill (any prompt length)."""

    def __init__(self, model: PreTrainedModel, positions: int, compile: bool) -> None:
        c = model.config
        inner = model.model
        self.heads = c.num_attention_heads
        self.kv_heads = c.num_key_value_heads
        self.head_dim = getattr(c, "head_dim", None) or c.hidden_size // self.heads
        self.scale = getattr(inner.layers[0].self_attn, "scaling", self.head_dim ** -0.5)
        norm_eps = getattr(inner.norm, "variance_epsilon", None)
        self.eps = norm_eps if norm_eps is not None else c.rms_norm_eps
        self.dtype = model.lm_head.weight.dtype
        self.device = model.device
        self.embed = inner.embed_tokens.weight.detach()
        self.lm_head = model.lm_head.weight.detach()
        self.norm = inner.norm.weight.detach()
        self.layers = [pack_layer(layer) for layer in inner.layers]
        self.arange = torch.arange(positions, device=model.device)
        self.cos, self.sin = self._rope_tables(model)
        # The steps' functions (static shapes) and the prefill's (the token count dynamic), each
        # with its own compile cache: eager, each layer's norms, rotary and gated MLP are many
        # small kernels; compiled, a few fused ones.
        self._pre_step = Compiled(self._pre) if compile else self._pre
        self._post_step = Compiled(self._post) if compile else self._post
        self._pre_prefill = Compiled(self._prefill_pre, (0, 4, 5)) if compile else self._pre
        self._post_prefill = Compiled(self._prefill_post, (0, 1)) if compile else self._post

    def _rope_tables(self, model: PreTrainedModel) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin per position, as the model's own rotary module computes them (HF's values)."""
        positions = self.arange[None]
        dummy = torch.zeros(1, dtype=self.dtype, device=model.device)
        cos, sin = (t[0] for t in model.model.rotary_emb(dummy, positions))
        half = self.head_dim // 2
        # rotate_half(x) * sin == swap_halves(x) * [-sin_1, sin_2], exactly (a sign flip is exact).
        return cos.contiguous(), torch.cat((-sin[:, :half], sin[:, half:]), -1).contiguous()

    def run(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
            attend: Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
            step: bool = False, prompt: torch.Tensor | None = None) -> torch.Tensor:
        """The layers and the final norm over hidden states x [n, hidden] at rotary rows cos, sin
        [n, 1, head_dim]; `attend(layer, q, k, v)` [n, heads * head_dim]; `step`: the steps'
        compiled functions, else the prefill's. `prompt` (which rows are a prompt's): the same
        arithmetic for every row here."""
        pre = self._pre_step if step else self._pre_prefill
        post = self._post_step if step else self._post_prefill
        for i, w in enumerate(self.layers):
            q, k, v = pre(x, w.in_norm, w.qkv, w.qkv_bias, cos, sin)
            x = post(x, attend(i, q, k, v), w.o_t, w.o_bias, w.post_norm, w.gate_up, w.down_t)
        return F.rms_norm(x, (x.shape[-1],), self.norm, self.eps)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The output head over (final-normed) hidden states x [rows, hidden]."""
        return F.linear(x, self.lm_head)

    def _pre(self, x, in_norm, qkv_w, qkv_b, cos, sin):  # noqa: ANN001, ANN202 (pure: compiled as is)
        """Norm, q/k/v projection, rotary embedding: q [n, heads, d], k and v [n, kv_heads, d]."""
        n = x.shape[0]
        h = self.heads
        kv = self.kv_heads
        half = self.head_dim // 2
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
