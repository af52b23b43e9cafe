"""Row-invariant tensor arithmetic for the batch engine: a row's result must not depend on how many
other rows share its matrix product, so a request decodes to the same bits alone or in any batch.

CPU GEMM kernels switch paths for very few rows (a 1- to 3-row product rounds differently from the
same rows inside a larger one), so every product here runs over a row count padded to a multiple
of a tile; `choose_tile` picks, at start-up, the smallest tile for which this holds on the machine
at hand (checked on the model's own weight shapes).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

TILES = (4, 8, 16, 32)  # the row tiles `choose_tile` tries, smallest first
KEY_CHUNK = 128  # a block's attention reads whole chunks of keys, at absolute bounds (`key_span`)
TRIALS = (1, 2, 3, 5, 7, 9, 17, 40, 97, 130)  # row counts `row_invariant` compares by default


def padded(n: int, tile: int) -> int:
    """`n` rows rounded up to whole tiles (one tile at least)."""
    return max(tile, -(-n // tile) * tile)


def pad_rows(x: torch.Tensor, tile: int, dim: int = 0) -> torch.Tensor:
    """`x` with zero rows appended along `dim` up to `padded` of its size there."""
    extra = padded(x.shape[dim], tile) - x.shape[dim]
    if extra == 0:
        return x
    shape = list(x.shape)
    shape[dim] = extra
    return torch.cat((x, x.new_zeros(shape)), dim)


def key_span(length: int, end: int) -> int:
    """The keys a block reads: its rows' keys end before `end`, rounded up to whole KEY_CHUNKs, at
    most its attention `length` (a request's, fixed for its generation)."""
    return min(length, padded(end, KEY_CHUNK))


def draft_slots(length: int, pos: int, shifts: torch.Tensor) -> torch.Tensor:
    """Per draft [drafts, length]: the cache slot holding the key at each position, positions after
    `pos` (the block's root) being `shift` slots further on (llma.static.packing's layout)."""
    at = torch.arange(length, device=shifts.device)
    return (at[None] + (at[None] > pos) * shifts[:, None]).clamp_(max=length - 1)


def block_mask(length: int, pos: int, rel: torch.Tensor, shifts: torch.Tensor, groups: int, tile: int,
               dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """What `block_attention` reads of a block besides its tensors, the same in every layer: per
    draft the slot of each position [drafts, L] (`draft_slots`) and the additive mask [M, L] of its
    (group, row) query rows padded to whole `tile`s (padding rows see every key; never read)."""
    slots = draft_slots(length, pos, shifts)
    seen = torch.arange(length, device=rel.device)[None] <= (pos + rel)[:, None]  # [rows, L]
    bias = torch.zeros(seen.shape, dtype=dtype, device=rel.device).masked_fill_(~seen, float("-inf"))
    return slots, pad_rows(bias.repeat(groups, 1), tile, 0)


def block_attention(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, pos: int,
                    rel: torch.Tensor, owner: torch.Tensor, shifts: torch.Tensor, scale: float,
                    tile: int, mask: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Attention of one request's block over its own cache slot.

    q [rows, heads, d]: the block's queries, row r at position `pos + rel[r]` of draft `owner[r]`;
    keys, values [kv_heads, L, d]: the slot's first L entries (the block's own already written);
    shifts [drafts]: per draft, from a key's position after `pos` to its slot. Each draft's keys are
    gathered into position order, so a row reads the keys it may see in the order a one-draft step
    would give them, and the rest add exact zeros; the products run over whole `tile`s of rows.
    Where L is a multiple of KEY_CHUNK the values are summed a chunk at a time (each chunk's
    product over KEY_CHUNK keys, then the chunks in order): reading only the chunks up to the
    block's last key (`key_span`) then gives the bits the whole L would (`span_invariant` checks).
    `mask`: `block_mask`'s result, made once per step (made here if not given); its slots None for
    one draft at shift 0 (read in place, no gather).
    Returns [rows, heads * d].
    """
    kv, length, d = keys.shape
    rows, heads, _ = q.shape
    groups = heads // kv
    slots, bias = mask or block_mask(length, pos, rel, shifts, groups, tile, q.dtype)
    if slots is None:  # one draft, its keys in place (shift 0): already in position order
        k_d, v_d = keys[None], values[None]
    else:
        k_d = keys[:, slots].transpose(0, 1)  # [drafts, kv, L, d]
        v_d = values[:, slots].transpose(0, 1)
    qg = q.view(rows, kv, groups, d).permute(1, 2, 0, 3).reshape(kv, groups * rows, d)  # (group, row)
    qg = pad_rows(qg, tile, 1)  # [kv, M, d]
    scores = torch.matmul(qg[None], k_d.transpose(-1, -2)) * scale + bias  # [drafts, kv, M, L]
    probs = torch.softmax(scores, -1)
    if length % KEY_CHUNK:
        out = torch.matmul(probs, v_d)  # [drafts, kv, M, d]
    else:
        chunks = length // KEY_CHUNK
        per_chunk = torch.matmul(probs.unflatten(-1, (chunks, KEY_CHUNK)).transpose(-3, -2),
                                 v_d.unflatten(-2, (chunks, KEY_CHUNK)))  # [drafts, kv, chunks, M, d]
        out = per_chunk.sum(2)
    out = out[:, :, : groups * rows].view(-1, kv, groups, rows, d)
    if out.shape[0] == 1:  # one draft: every row its own
        return out[0].permute(2, 0, 1, 3).reshape(rows, heads * d)
    picked = out[owner, :, :, torch.arange(rows, device=q.device)]  # [rows, kv, groups, d]
    return picked.reshape(rows, heads * d)


def chunk_mask(length: int, pos: int, rows: int, groups: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """`chunk_attention`'s mask [groups * rows, length]: (group, row) r may see keys up to `pos + r`."""
    at = torch.arange(length, device=device)
    return (at[None] <= pos + torch.arange(rows, device=device)[:, None]).repeat(groups, 1)


def chunk_attention(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, scale: float,
                    mask: torch.Tensor) -> torch.Tensor:
    """Attention of a prompt chunk (consecutive rows, one draft, the first at the `pos` its mask was
    made for) over its slot's keys, in one fused kernel (scaled_dot_product_attention). A row's bits
    depend on the chunk (its rows and keys), which a request cuts the same way alone or in any
    batch, not on other requests.

    q [rows, heads, d]; keys, values [kv_heads, L, d]; mask: `chunk_mask(L, pos, rows, groups)`.
    Returns [rows, heads * d]."""
    kv, _, d = keys.shape
    rows, heads, _ = q.shape
    groups = heads // kv
    qg = q.view(rows, kv, groups, d).permute(1, 2, 0, 3).reshape(1, kv, groups * rows, d)  # (group, row)
    out = F.scaled_dot_product_attention(qg, keys[None], values[None], attn_mask=mask, scale=scale)
    return out.view(kv, groups, rows, d).permute(2, 0, 1, 3).reshape(rows, heads * d)


def linear(x: torch.Tensor, weight: torch.Tensor, tile: int) -> torch.Tensor:
    """`F.linear(x, weight)` over whole row tiles (the padding rows' results dropped)."""
    return F.linear(pad_rows(x, tile), weight)[: x.shape[0]]


def row_invariant(weight: torch.Tensor, tile: int, trials: tuple[int, ...] | None = None) -> bool:
    """Do the rows of `x @ weight.T` (F.linear) and of `addmm(x, y, weight.T)` (the layers' residual
    products) come out the same whatever the row count, over whole `tile`s, for this shape here?"""
    trials = trials or TRIALS
    g = torch.Generator(device=weight.device).manual_seed(0)
    x = torch.randn(max(trials), weight.shape[1], generator=g, device=weight.device, dtype=weight.dtype)
    r = torch.randn(max(trials), weight.shape[0], generator=g, device=weight.device, dtype=weight.dtype)

    def both(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return linear(x[:n], weight, tile), torch.addmm(pad_rows(r[:n], tile), pad_rows(x[:n], tile), weight.t())[:n]

    full = both(max(trials))
    return all(all(torch.equal(a, b[:n]) for a, b in zip(both(n), full)) for n in trials)


def choose_tile(weights: Sequence[torch.Tensor], trials: tuple[int, ...] = TRIALS) -> int | None:
    """The smallest of TILES for which every one of `weights` is `row_invariant` over `trials` row
    counts; None if none is."""
    return next((t for t in TILES if all(row_invariant(w, t, trials) for w in weights)), None)


def span_invariant(heads: int, kv_heads: int, head_dim: int, tile: int, dtype: torch.dtype,
                   device: torch.device | str = "cpu") -> bool:
    """Does a block's attention over its `key_span` give the bits of its whole attention length,
    for blocks of 1 to 32 rows at positions across several chunks, here?"""
    g = torch.Generator(device=device).manual_seed(0)
    length = 8 * KEY_CHUNK
    k, v = (torch.randn(kv_heads, length, head_dim, generator=g, device=device).to(dtype) for _ in "kv")
    zero = torch.zeros(1, dtype=torch.long, device=device)
    for pos in (5, KEY_CHUNK - 3, 2 * KEY_CHUNK + 40, 5 * KEY_CHUNK - 1):
        for rows in (1, 4, 9, 32):
            q = torch.randn(rows, heads, head_dim, generator=g, device=device).to(dtype)
            rel = torch.arange(rows, device=device)
            owner = torch.zeros(rows, dtype=torch.long, device=device)

            def attend(n: int) -> torch.Tensor:
                return block_attention(q, k[:, :n], v[:, :n], pos, rel, owner, zero, head_dim ** -0.5, tile)

            if not torch.equal(attend(key_span(length, pos + rows)), attend(length)):
                return False
    return True
