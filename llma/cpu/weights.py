"""`Int4Weights`: a Llama-family model's layers with 4-bit weights (llma.cpu.int4) and its output
head in bf16, in the interface of llma.static.weights.LlamaWeights that the batch step uses.

The residual stream, norms, rotary embedding, attention and KV cache stay fp32; each product takes
its input in bf16 and returns bf16, added to the fp32 residual. Every row's arithmetic is its own
(no reduction across rows), so a row's bits depend on the row count only through the kernels'
row tiling, which `row_invariant` checks.
"""
from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from llma.cpu.int4 import GROUP, OUT_MULTIPLE, Int4Matrix, available
from llma.cpu.tiles import choose_tile
from llma.static.weights import LlamaWeights

QuantLayer = namedtuple("QuantLayer", "in_norm qkv qkv_bias o o_bias post_norm gate_up down")


class Int4Weights:
    """The layers of `model` as `Int4Matrix`es, the output head in bf16; the embedding, norms and
    rotary tables as `LlamaWeights` has them (fp32). `run` and `logits` as LlamaWeights'."""

    def __init__(self, model: PreTrainedModel, positions: int) -> None:
        base = LlamaWeights(model, positions, compile=False)
        self.heads, self.kv_heads, self.head_dim = base.heads, base.kv_heads, base.head_dim
        self.scale, self.eps, self.dtype, self.device = base.scale, base.eps, base.dtype, base.device
        self.embed, self.norm, self.cos, self.sin = base.embed, base.norm, base.cos, base.sin
        self.lm_head = base.lm_head.to(torch.bfloat16)
        self.layers = [QuantLayer(w.in_norm, Int4Matrix(w.qkv), w.qkv_bias, Int4Matrix(w.o_t.t()), w.o_bias,
                                  w.post_norm, Int4Matrix(w.gate_up), Int4Matrix(w.down_t.t()))
                       for w in base.layers]

    def run(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
            attend: Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
            step: bool = False) -> torch.Tensor:
        """As `LlamaWeights.run` (`step` makes no difference here)."""
        n = x.shape[0]
        h, kv, d = self.heads, self.kv_heads, self.head_dim
        half = d // 2
        hidden = (x.shape[-1],)
        for i, w in enumerate(self.layers):
            qkv = w.qkv(F.rms_norm(x, hidden, w.in_norm, self.eps)).float()
            if w.qkv_bias is not None:
                qkv = qkv + w.qkv_bias
            qkv = qkv.view(n, h + 2 * kv, d)
            qk = qkv[:, : h + kv]
            qk = qk * cos + torch.cat((qk[..., half:], qk[..., :half]), -1) * sin
            x = x + w.o(attend(i, qk[:, :h], qk[:, h:], qkv[:, h + kv :]))
            if w.o_bias is not None:
                x = x + w.o_bias
            gate, up = w.gate_up(F.rms_norm(x, hidden, w.post_norm, self.eps)).chunk(2, -1)
            x = x + w.down(F.silu(gate) * up)
        return F.rms_norm(x, hidden, self.norm, self.eps)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The output head over hidden states x [rows, hidden] (bf16 product)."""
        return F.linear(x.to(torch.bfloat16), self.lm_head)

    def products(self) -> list[tuple[Callable[[torch.Tensor], torch.Tensor], int]]:
        """Every distinct product of a step and its input width, for a row-invariance check."""
        w = self.layers[0]
        return [(m, m.shape[1]) for m in (w.qkv, w.o, w.gate_up, w.down)] + [(self.logits, self.lm_head.shape[1])]


def int4_reason(model: PreTrainedModel) -> str | None:
    """Why `model` cannot run with `Int4Weights` here (None if it can): off the CPU, a torch without
    the CPU int4 kernel, or a layer width the kernel does not take (llma.cpu.int4)."""
    if model.device.type != "cpu":
        return f"int4 weights run on the CPU only, the model is on {model.device}"
    if not available():
        return "this torch build does not run the CPU int4 kernel"
    a = model.model.layers[0].self_attn
    qkv = sum(p.weight.shape[0] for p in (a.q_proj, a.k_proj, a.v_proj))
    c = model.config
    widths = {"hidden_size": c.hidden_size, "intermediate_size": c.intermediate_size, "q, k and v": qkv}
    bad = [f"{k}={v}" for k, v in widths.items() if v % GROUP or v % OUT_MULTIPLE]
    return f"int4 weights need widths in multiples of {GROUP}: {', '.join(bad)}" if bad else None


def int4_weights(model: PreTrainedModel, positions: int) -> tuple[Int4Weights, int | None]:
    """`Int4Weights` of `model` and the smallest row tile for which its step is row-invariant here
    (llma.cpu.tiles; None if none is). Raises ValueError where `int4_reason` gives one."""
    reason = int4_reason(model)
    if reason is not None:
        raise ValueError(reason)
    w = Int4Weights(model, positions)
    return w, choose_tile(w.products(), w.heads, w.kv_heads, w.head_dim, w.dtype)
