"""The static backend's fixed-shape step: one forward over every cache copy's block of query rows.

No host synchronisation and no data-dependent shapes inside: safe to capture in a CUDA graph.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from llma.static.attention import flash
from llma.static.cache import KVCache
from llma.static.inputs import StepInputs, StepLayout
from llma.static.packing import move_kept, per_draft_attention
from llma.static.weights import LlamaWeights


class Step:
    """`step(flat, layout, length)`: the logits [copies * block, vocab] (the model's dtype) and their
    argmax [copies * block] of one step whose inputs `flat` are laid out by `layout`, attending over
    the first `length` cache slots ("sdpa", "bmm") or the keys in use ("flash", "split").

    Each row's result depends only on its own token, its position and the cache: the same bits in
    any row of the block, whatever the other rows hold (docs/DESIGN.md)."""

    def __init__(self, weights: LlamaWeights, cache: KVCache, attention: str) -> None:
        self.weights = weights
        self.cache = cache
        self.attention = attention
        self.flash_offsets: dict[tuple[int, int], tuple[torch.Tensor, ...]] = {}  # flash's, made in a warm-up
        self._split: dict[tuple[int, int], Callable[..., torch.Tensor]] = {}

    def split_kernel(self, block: int, packed: int) -> Callable[..., torch.Tensor]:
        """The split-KV attention for `block` rows (its buffers made in a warm-up, never in a capture)."""
        if (block, packed) not in self._split:
            from llma.static.split_attention import SplitAttention  # needs triton: imported only if chosen

            w = self.weights
            self._split[block, packed] = SplitAttention(
                block, w.heads, w.kv_heads, w.head_dim, self.cache.capacity, w.scale, w.device,
                self.cache.copies, packed)
        return self._split[block, packed]

    def __call__(self, flat: torch.Tensor, layout: StepLayout,
                 length: int) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.weights
        inp = layout.split(flat)
        b = layout.block
        slots = inp.pos + w.arange[:b]  # where the rows' keys go
        positions = slots if inp.rel is None else inp.pos + inp.rel  # a packed row: its draft's position
        if inp.move is not None:  # the last step's kept draft first (its keys may be read below)
            move_kept(self.cache.kv, inp.move, w.arange[: b - 1])
        attend = self._attention(inp, layout, positions, slots, length)
        at = positions.repeat(layout.copies) if layout.copies > 1 else positions  # each copy: the same
        cos, sin, local = w.rotary(at)
        x = w.run(w.embedding(inp.ids), cos, sin, attend, step=True, local=local)
        logits = w.logits(x)
        return logits, logits.argmax(-1)  # the argmax of the model's dtype: fp32's, as the cast is exact

    def _attention(self, inp: StepInputs, layout: StepLayout, positions: torch.Tensor, slots: torch.Tensor,
                   length: int) -> Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
        """attend(layer, q [n, heads, d], k and v [n, kv_heads, d]) -> [n, heads * d] for this step,
        writing k and v into the cache at `slots` first."""
        w = self.weights
        cache = self.cache
        copies = layout.copies
        b = layout.block
        n = copies * b
        kv = w.kv_heads
        d = w.head_dim
        groups = w.heads // kv
        masks = {}  # per window (None: full attention), in the layout of the keys below
        if self.attention in ("sdpa", "bmm"):
            for window in set(w.windows):
                masks[window] = step_mask(w.arange[:length], positions, window, groups, w.dtype)
        used = (inp.pos + b).to(torch.int32) if self.attention == "flash" else None  # keys [0, pos + block)

        def attend(i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            cache.write(i, slots, k, v)
            window = w.windows[i]
            if self.attention == "flash":  # one copy (checked by the backend)
                k_all = cache.k[i, 0].transpose(0, 1)
                v_all = cache.v[i, 0].transpose(0, 1)
                return flash(q, k_all, v_all, used, w.scale, self.flash_offsets, window).reshape(b, -1)
            if self.attention == "split":
                kernel = self.split_kernel(b, layout.packed)
                return kernel(q, cache.k[i], cache.v[i], inp.pos, inp.info, window).reshape(n, -1)
            mask = masks[window]
            if inp.owner is not None:
                return per_draft_attention(q, cache.k[i, 0, :, :length], cache.v[i, 0, :, :length], mask,
                                           inp.shift, inp.owner, inp.pos[0], w.scale, groups)
            q = q.view(copies, b, kv, groups, d).permute(0, 2, 3, 1, 4).reshape(copies * kv, groups * b, d)
            keys = cache.k[i, :, :, :length].flatten(0, 1)
            values = cache.v[i, :, :, :length].flatten(0, 1)
            if self.attention == "bmm":
                scores = torch.baddbmm(mask[0], q, keys.transpose(1, 2), alpha=w.scale)
                out = torch.bmm(torch.softmax(scores, -1), values)
            else:
                out = F.scaled_dot_product_attention(q[None], keys[None], values[None], attn_mask=mask,
                                                     scale=w.scale)
            return out.view(copies, kv, groups, b, d).permute(0, 3, 1, 2, 4).reshape(n, -1)

        return attend


def step_mask(keys: torch.Tensor, positions: torch.Tensor, window: int | None, groups: int,
              dtype: torch.dtype) -> torch.Tensor:
    """The additive mask [1, 1, groups * block, L] of rows at `positions` [block] over key positions
    `keys` [L]: a row sees the keys at or before its position (and within `window` of it, if set),
    repeated per query head of a group (the (group, row) order of the grouped query below)."""
    allowed = keys[None, :] <= positions[:, None]  # [block, L]: causal by position
    if window is not None:
        allowed &= keys[None, :] > positions[:, None] - window
    mask = torch.zeros(allowed.shape, dtype=dtype, device=keys.device)
    return mask.masked_fill_(~allowed, float("-inf")).repeat(groups, 1)[None, None]
