"""The row tile for a step made of arbitrary row-wise products: the smallest for which each
product, and the batch step's block attention, gives every row the same bits whatever the row
count (llma.batch.rows explains why CPU kernels may not)."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from llma.batch.rows import TILES, block_attention, pad_rows

TRIALS = (1, 2, 3, 5, 7, 9, 17, 33, 40)  # row counts compared with the largest


def product_invariant(product: Callable[[torch.Tensor], torch.Tensor], inputs: int, tile: int,
                      dtype: torch.dtype, trials: Sequence[int] = TRIALS) -> bool:
    """Are the rows of `product(x)` (x [rows, inputs], padded to whole `tile`s) the same for every
    row count of `trials`?"""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(max(trials), inputs, generator=g, dtype=torch.float32).to(dtype)
    full = product(pad_rows(x, tile))
    return all(torch.equal(product(pad_rows(x[:n], tile))[:n], full[:n]) for n in trials)


def position_invariant(product: Callable[[torch.Tensor], torch.Tensor], inputs: int, rows: int,
                       dtype: torch.dtype, shifts: Sequence[int] = (1, 17, 40)) -> bool:
    """Are the rows of `product(x)` (x of a multiple of `rows` rows, in calls of `rows` each) the same
    wherever a row sits in its call? (Another request's rows before it move it.)"""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2 * rows, inputs, generator=g, dtype=torch.float32).to(dtype)
    full = product(x)
    return all(torch.equal(product(torch.cat((x[-s:], x[:-s])))[s:], full[:-s]) for s in shifts if s < rows)


def attention_invariant(heads: int, kv_heads: int, head_dim: int, tile: int, dtype: torch.dtype,
                        length: int = 128) -> bool:
    """Are a block's attention rows (one draft, positions 60...) the same for every row count?"""
    g = torch.Generator().manual_seed(0)
    rows = max(TRIALS)
    q = torch.randn(rows, heads, head_dim, generator=g).to(dtype)
    k, v = (torch.randn(kv_heads, length, head_dim, generator=g).to(dtype) for _ in "kv")
    zero = torch.zeros(1, dtype=torch.long)

    def attend(n: int) -> torch.Tensor:
        return block_attention(q[:n], k, v, 60, torch.arange(n), torch.zeros(n, dtype=torch.long), zero,
                               head_dim ** -0.5, tile)

    full = attend(rows)
    return all(torch.equal(attend(n), full[:n]) for n in TRIALS)


def choose_tile(products: Sequence[tuple[Callable[[torch.Tensor], torch.Tensor], int]], heads: int,
                kv_heads: int, head_dim: int, dtype: torch.dtype, tiles: Sequence[int] = (1, 2, *TILES),
                trials: Sequence[int] = TRIALS) -> int | None:
    """The smallest of `tiles` for which every (product, inputs) of `products` (over `trials` row
    counts) and the attention (if `heads`) are row-invariant; None if none is."""
    return next((t for t in tiles
                 if (not heads or attention_invariant(heads, kv_heads, head_dim, t, dtype))
                 and all(product_invariant(p, n, t, dtype, trials) for p, n in products)), None)
