"""A Llama-family model's weights and per-layer arithmetic, as the static backend's steps use them."""
from __future__ import annotations

import logging
from collections import namedtuple
from collections.abc import Callable

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from llma.static.family import arithmetic, text_model

log = logging.getLogger(__name__)

# q, k and v (and gate and up) projections in one matrix each: one GEMM each; o and down transposed
# for addmm (the residual added in the same kernel). post_norm: the norm before the MLP (Gemma's
# pre_feedforward_layernorm). q_norm, k_norm: per-head norms (Qwen3, Gemma 3); attn_norm, mlp_norm:
# Gemma's norms after the attention and the MLP. None where the family has none.
Layer = namedtuple("Layer", "in_norm qkv qkv_bias o_t o_bias post_norm gate_up down_t q_norm k_norm attn_norm "
                   "mlp_norm", defaults=(None, None, None, None))


def _weight(norm: torch.nn.Module | None, gemma: bool) -> torch.Tensor | None:
    """A norm's scale as the arithmetic applies it: Gemma's (1 + weight), in fp32."""
    if norm is None:
        return None
    return 1.0 + norm.weight.detach().float() if gemma else norm.weight.detach()


def pack_layer(layer: torch.nn.Module, gemma: bool = False) -> Layer:
    a = layer.self_attn
    mlp = layer.mlp
    projs = (a.q_proj, a.k_proj, a.v_proj)
    bias = torch.cat([p.bias for p in projs]) if a.q_proj.bias is not None else None
    o_bias = None if a.o_proj.bias is None else a.o_proj.bias.detach()
    before_mlp = layer.pre_feedforward_layernorm if gemma else layer.post_attention_layernorm
    after = (layer.post_attention_layernorm, layer.post_feedforward_layernorm) if gemma else (None, None)
    qk = (getattr(a, "q_norm", None), getattr(a, "k_norm", None))
    return Layer(_weight(layer.input_layernorm, gemma), torch.cat([p.weight for p in projs]), bias,
                 a.o_proj.weight.detach().t(), o_bias, _weight(before_mlp, gemma),
                 torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]), mlp.down_proj.weight.detach().t(),
                 *(_weight(n, gemma) for n in (*qk, *after)))


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


Rotary = tuple[torch.Tensor, torch.Tensor]  # cos and sin rows [n, 1, head_dim]


class LlamaWeights:
    """A Llama-family model's weights, packed, its rotary tables and the layers' arithmetic (pure
    tensor code: the caller supplies the attention, which also writes the KV cache).

    What a caller must do beyond `run` (llma.static.family.Arithmetic, `beyond_run`): embed with
    `embedding`, give `run` the local layers' rotary rows where `local_cos` is set (`rotary` gives
    both), attend within `windows[i]` in layer i, and take the logits from `logits`.

    `positions`: rows of the rotary tables; `compile`: torch.compile the pure parts of each layer,
    for the steps (static shapes) and for the prefill (any prompt length)."""

    def __init__(self, model: PreTrainedModel, positions: int, compile: bool) -> None:
        c, inner = text_model(model)
        self.arithmetic = arithmetic(model)
        gemma = self.arithmetic.gemma
        self.windows = self.arithmetic.windows  # per layer: its sliding window, or None
        self.heads = c.num_attention_heads
        self.kv_heads = c.num_key_value_heads
        self.head_dim = getattr(c, "head_dim", None) or c.hidden_size // self.heads
        self.scale = getattr(inner.layers[0].self_attn, "scaling", self.head_dim ** -0.5)
        norm_eps = getattr(inner.norm, "variance_epsilon", None)
        self.eps = norm_eps if norm_eps is not None else c.rms_norm_eps
        self.dtype = model.lm_head.weight.dtype
        self.device = model.device
        self.embed = inner.embed_tokens.weight.detach()
        # Gemma: embeddings times sqrt(hidden) rounded to the weights' dtype, as its embedding module does.
        self.embed_scale = inner.embed_tokens.embed_scale.to(self.dtype) if gemma else None
        self.lm_head = model.lm_head.weight.detach()
        self.norm = _weight(inner.norm, gemma)
        self.layers = [pack_layer(layer, gemma) for layer in inner.layers]
        self.arange = torch.arange(positions, device=model.device)
        self.cos, self.sin = self._rope_tables(model, "full_attention" if gemma else None)
        self.local_cos = self.local_sin = None  # Gemma: the sliding layers' table (its own base)
        self._local = [False] * len(self.layers)
        if gemma and any(w is not None for w in self.windows):
            self.local_cos, self.local_sin = self._rope_tables(model, "sliding_attention")
            self._local = [w is not None for w in self.windows]
        # The steps' functions (static shapes) and the prefill's (the token count dynamic), each
        # with its own compile cache: eager, each layer's norms, rotary and gated MLP are many
        # small kernels; compiled, a few fused ones.
        self._pre_step = Compiled(self._pre) if compile else self._pre
        self._post_step = Compiled(self._post) if compile else self._post
        self._pre_prefill = Compiled(self._prefill_pre, (0, 4, 5)) if compile else self._pre
        self._post_prefill = Compiled(self._prefill_post, (0, 1)) if compile else self._post

    def _rope_tables(self, model: PreTrainedModel, kind: str | None) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin per position, as the model's own rotary module computes them (HF's values);
        `kind`: the layer type, for a model with a table per type (Gemma)."""
        positions = self.arange[None]
        dummy = torch.zeros(1, dtype=self.dtype, device=model.device)
        by_type = () if kind is None else (kind,)
        cos, sin = (t[0] for t in text_model(model)[1].rotary_emb(dummy, positions, *by_type))
        half = self.head_dim // 2
        # rotate_half(x) * sin == swap_halves(x) * [-sin_1, sin_2], exactly (a sign flip is exact).
        return cos.contiguous(), torch.cat((-sin[:, :half], sin[:, half:]), -1).contiguous()

    def embedding(self, ids: torch.Tensor) -> torch.Tensor:
        """The input hidden states [n, hidden] of token ids [n]."""
        x = F.embedding(ids, self.embed)
        return x if self.embed_scale is None else x * self.embed_scale

    def rotary(self, at: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Rotary | None]:
        """`run`'s rotary rows at positions `at` [n]: cos, sin and the local layers' (None: the same)."""
        local = None if self.local_cos is None else (self.local_cos[at][:, None], self.local_sin[at][:, None])
        return self.cos[at][:, None], self.sin[at][:, None], local

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The logits of final hidden states x [n, hidden] (the model's dtype), soft-capped if it is."""
        logits = F.linear(x, self.lm_head)
        cap = self.arithmetic.softcap
        return logits if cap is None else torch.tanh(logits / cap) * cap

    def run(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
            attend: Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
            step: bool = False, local: Rotary | None = None, prompt: torch.Tensor | None = None) -> torch.Tensor:
        """The layers and the final norm over hidden states x [n, hidden] at rotary rows cos, sin
        [n, 1, head_dim] (`local`: the sliding layers' rows, required where `local_cos` is set);
        `attend(layer, q, k, v)` [n, heads * head_dim]; `step`: the steps' compiled functions, else
        the prefill's. `prompt` (which rows are a prompt's): the same arithmetic for every row here
        (llma.cpu's 4-bit weights use it)."""
        if self.local_cos is not None and local is None:
            raise ValueError("this model's sliding layers have their own rotary table: pass `local`")
        pre = self._pre_step if step else self._pre_prefill
        post = self._post_step if step else self._post_prefill
        for i, w in enumerate(self.layers):
            c, s = local if self._local[i] else (cos, sin)
            q, k, v = pre(x, w.in_norm, w.qkv, w.qkv_bias, c, s, w.q_norm, w.k_norm)
            x = post(x, attend(i, q, k, v), w.o_t, w.o_bias, w.post_norm, w.gate_up, w.down_t, w.attn_norm,
                     w.mlp_norm)
        return self._rms(x, self.norm)

    def _rms(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """RMSNorm over the last dimension; Gemma's in fp32, cast back after the scale (as its module)."""
        if self.arithmetic.gemma:
            return F.rms_norm(x.float(), (x.shape[-1],), weight, self.eps).to(x.dtype)
        return F.rms_norm(x, (x.shape[-1],), weight, self.eps)

    def _pre(self, x, in_norm, qkv_w, qkv_b, cos, sin, q_norm=None, k_norm=None):  # noqa: ANN001, ANN202
        """Norm, q/k/v projection, per-head q/k norms, rotary embedding: q [n, heads, d], k and v
        [n, kv_heads, d]. (Pure: compiled as is.)"""
        n = x.shape[0]
        h = self.heads
        kv = self.kv_heads
        half = self.head_dim // 2
        y = self._rms(x, in_norm)
        qkv = F.linear(y, qkv_w, qkv_b).view(n, h + 2 * kv, self.head_dim)
        qk = qkv[:, : h + kv]
        if q_norm is not None:
            qk = torch.cat((self._rms(qk[:, :h], q_norm), self._rms(qk[:, h:], k_norm)), 1)
        qk = qk * cos + torch.cat((qk[..., half:], qk[..., :half]), -1) * sin
        return qk[:, :h], qk[:, h:], qkv[:, h + kv :]

    def _prefill_pre(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self._pre(*args)

    def _prefill_post(self, *args: torch.Tensor) -> torch.Tensor:
        return self._post(*args)

    def _post(self, x, attn, o_t, o_bias, post_norm, gate_up, down_t, attn_norm=None,  # noqa: ANN001, ANN202
              mlp_norm=None):
        """Output projection and residual, norm, gated MLP and residual (Gemma: each output normed
        before its residual)."""
        if attn_norm is None:
            x = torch.addmm(x, attn, o_t)
            if o_bias is not None:
                x = x + o_bias
        else:
            a = attn @ o_t
            x = x + self._rms(a if o_bias is None else a + o_bias, attn_norm)
        gate, up = F.linear(self._rms(x, post_norm), gate_up).chunk(2, -1)
        act = F.gelu(gate, approximate="tanh") if self.arithmetic.activation != "silu" else F.silu(gate)
        if mlp_norm is None:
            return torch.addmm(x, act * up, down_t)
        return x + self._rms((act * up) @ down_t, mlp_norm)
