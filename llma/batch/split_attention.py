"""Split-KV attention over many requests' blocks at once, each in its own cache slot, in Triton.

The batch engine's CUDA step: every request contributes a block of `R` query rows (its last token
and packed drafts, padded to R), at its own position (`root`) in its own slot. As in
llma.static.split_attention, keys are cut into fixed chunks by absolute position; a program per
(head, chunk, block) computes each row's partial softmax over the chunk (a pass per draft where
the drafts' keys differ), and a second kernel combines a row's chunks in chunk order.

Batch invariance by construction: a row's result depends only on its query, its position, its
draft's key order and its slot's contents. Chunk bounds are absolute, the combine reads the same
chunks in the same order whatever the batch, every tile has `BLOCK_M` rows whatever R, and keys a
row may not see add exact zeros (tiles and chunks no row of the block sees are skipped). So the same
request gets the same bits alone or beside any others, in any row of any bucket.

On CUDA the kernels are compiled by Triton; on CPU they run only in Triton's interpreter
(TRITON_INTERPRET=1 set before triton is imported: for the tests).
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

CHUNK = 128  # keys per chunk (absolute positions [j * CHUNK, (j + 1) * CHUNK))
BLOCK_N = 64  # keys per tile inside a chunk
BLOCK_M = 32  # query rows per tile: the most a block holds, the same for every R


def meta_size(blocks: int, rows: int, drafts: int) -> int:
    """Ints in the metadata tensor for `blocks` blocks of `rows` rows and up to `drafts` drafts each."""
    return 3 * blocks + 2 * blocks * rows + blocks * drafts


def metadata(roots: list[int], slots: list[int], rels: list[list[int]], owners: list[list[int]],
             shifts: list[list[int]], drafts: int) -> list[int]:
    """The metadata `BatchAttention` reads, as ints: per block its root position, slot and number of
    drafts; per row (R per block) its position after the root and its draft; per block (G each) the
    drafts' shifts from a key's position after the root to its slot. `shifts[b]` holds block b's
    drafts (padded here to G = `drafts`); `rels`/`owners` R entries per block."""
    padded = [s + [0] * (drafts - len(s)) for s in shifts]
    return [*roots, *slots, *map(len, shifts), *(x for r in rels for x in r), *(x for o in owners for x in o),
            *(x for s in padded for x in s)]


@triton.jit
def _partial(q_ptr, k_ptr, v_ptr, meta_ptr, m_ptr, l_ptr, acc_ptr,  # noqa: ANN001, ANN202 (Triton)
             stride_qr, stride_qh, stride_ks, stride_kh, stride_kn, n_keys, n_chunks, heads, scale, B, R, G,
             GROUPS: tl.constexpr, BLOCK_M: tl.constexpr,
             BLOCK_N: tl.constexpr, CHUNK: tl.constexpr, D: tl.constexpr, PRECISION: tl.constexpr):
    """Program (head h, chunk j, block b): for each row of block b, the max m, the sum of
    exponentials l and the unnormalised output acc of softmax(q . k) over the chunk's keys at
    positions <= the row's, read in its draft's order. A chunk wholly at or before the root is the
    same for every draft: one pass computes it for all rows; a later chunk takes a pass per draft
    (each over the block's rows, keeping its own rows' results)."""
    h, j, b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    r, d = tl.arange(0, BLOCK_M), tl.arange(0, D)
    root = tl.load(meta_ptr + b)
    slot = tl.load(meta_ptr + B + b)
    drafts = tl.load(meta_ptr + 2 * B + b)
    last = root + R - 1  # no row of the block sits after it
    start = j * CHUNK
    if start <= last:
        rel = tl.load(meta_ptr + 3 * B + b * R + r, mask=r < R, other=0)
        owner = tl.load(meta_ptr + 3 * B + B * R + b * R + r, mask=r < R, other=-1)
        shared = start + CHUNK <= root + 1  # only keys at or before the root: the same for every draft
        q = tl.load(q_ptr + (b * R + r[:, None]) * stride_qr + h * stride_qh + d[None, :],
                    mask=r[:, None] < R, other=0.0)
        base = slot.to(tl.int64) * stride_ks + (h // GROUPS) * stride_kh
        out = ((b * heads + h) * n_chunks + j) * BLOCK_M + r
        for g in range(0, G):
            mine = tl.where(shared, r < R, owner == g)
            run = (g < drafts) & ((g == 0) | (start + CHUNK > root + 1))
            run = run & (tl.max(mine.to(tl.int32), 0) > 0)
            if run:
                shift = tl.load(meta_ptr + 3 * B + 2 * B * R + b * G + g)
                m = tl.full([BLOCK_M], float("-inf"), tl.float32)
                total = tl.zeros([BLOCK_M], tl.float32)
                acc = tl.zeros([BLOCK_M, D], tl.float32)
                for t in range(0, CHUNK, BLOCK_N):
                    if start + t <= last:
                        n = start + t + tl.arange(0, BLOCK_N)  # key positions
                        at = tl.where(n > root, n + shift, n)[:, None]  # their slots in draft g's order
                        inside = at < n_keys
                        k = tl.load(k_ptr + base + at * stride_kn + d[None, :], mask=inside, other=0.0)
                        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale
                        s = tl.where(n[None, :] <= root + rel[:, None], s, float("-inf"))
                        m_new = tl.maximum(m, tl.max(s, 1))
                        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row with no key yet: p = 0
                        e = tl.exp(s - m_safe[:, None])
                        alpha = tl.exp(m - m_safe)
                        v = tl.load(v_ptr + base + at * stride_kn + d[None, :], mask=inside, other=0.0)
                        total = total * alpha + tl.sum(e, 1)
                        acc = acc * alpha[:, None] + tl.dot(e.to(v.dtype), v, input_precision=PRECISION)
                        m = m_new
                tl.store(m_ptr + out, m, mask=mine)  # the block's other rows: another draft's pass
                tl.store(l_ptr + out, total, mask=mine)
                tl.store(acc_ptr + out[:, None] * D + d[None, :], acc, mask=mine[:, None])


@triton.jit
def _combine(m_ptr, l_ptr, acc_ptr, meta_ptr, out_ptr,  # noqa: ANN001, ANN202 (a Triton kernel)
             stride_or, stride_oh, n_chunks, heads, B, R, BLOCK_M: tl.constexpr, CHUNKS: tl.constexpr,
             CHUNK: tl.constexpr, D: tl.constexpr):
    """Program (head h, row r, block b): the chunks holding keys the row sees (a fixed set for its
    position), rescaled to their common max and summed in chunk order."""
    h, r, b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    pos = tl.load(meta_ptr + b) + tl.load(meta_ptr + 3 * B + b * R + r)
    c, d = tl.arange(0, CHUNKS), tl.arange(0, D)
    seen = (c * CHUNK <= pos) & (c < n_chunks)  # each such chunk holds a seen key: its m is finite
    at = ((b * heads + h) * n_chunks + c) * BLOCK_M + r
    m = tl.load(m_ptr + at, mask=seen, other=float("-inf"))
    w = tl.where(seen, tl.exp(m - tl.max(m, 0)), 0.0)
    total = tl.load(l_ptr + at, mask=seen, other=0.0)
    acc = tl.load(acc_ptr + at[:, None] * D + d[None, :], mask=seen[:, None], other=0.0)
    out = tl.sum(acc * w[:, None], 0) / tl.sum(total * w, 0)
    tl.store(out_ptr + (b * R + r) * stride_or + h * stride_oh + d, out.to(out_ptr.dtype.element_ty))


class BatchAttention:
    """Launches for steps of up to `max_blocks` blocks over a slot cache of `capacity` positions;
    one instance serves every layer, step and bucket (its partial results are overwritten each call).

    `__call__(q, k, v, meta, blocks, rows, drafts, chunks)`: q [blocks * rows, heads, d] (block b's
    rows from b * rows, in its packed order); k, v [slots, kv_heads, capacity, d] (one layer's cache,
    the blocks' own keys already written); meta: the device tensor of `metadata` for this layout;
    `chunks`: how many chunks hold any block's keys (a bound; more only costs time). Returns q's shape.
    """

    def __init__(self, heads: int, kv_heads: int, head_dim: int, capacity: int, scale: float,
                 max_blocks: int, device: torch.device) -> None:
        if head_dim not in (16, 32, 64, 128, 256):
            raise ValueError(f"batch split attention needs a power-of-two head size 16-256, got {head_dim}")
        if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
            raise ValueError("batch split attention runs on CUDA, or on CPU in Triton's interpreter "
                             "(TRITON_INTERPRET=1 before triton is imported: for tests)")
        self.heads = heads
        self.groups = heads // kv_heads
        self.head_dim = head_dim
        self.scale = scale
        self.n_chunks = -(-capacity // CHUNK)
        self.max_blocks = max_blocks
        size = max_blocks * heads * self.n_chunks * BLOCK_M
        self.m = torch.empty(size, dtype=torch.float32, device=device)
        self.l = torch.empty_like(self.m)
        self.acc = torch.empty(size * head_dim, dtype=torch.float32, device=device)

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, meta: torch.Tensor, blocks: int,
                 rows: int, drafts: int, chunks: int) -> torch.Tensor:
        if (q.stride(-1) != 1 or k.stride(-1) != 1 or k.stride() != v.stride() or q.shape[0] != blocks * rows
                or not 1 <= rows <= BLOCK_M or blocks > self.max_blocks
                or meta.numel() != meta_size(blocks, rows, drafts)):
            raise ValueError("batch split attention: unexpected layout, rows, blocks or metadata size")
        out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
        precision = "ieee" if q.dtype == torch.float32 else "tf32"
        chunks = min(chunks, self.n_chunks)
        _partial[(self.heads, chunks, blocks)](
            q, k, v, meta, self.m, self.l, self.acc, q.stride(0), q.stride(1), k.stride(0), k.stride(1),
            k.stride(2), k.shape[2], self.n_chunks, self.heads, self.scale, blocks, rows, drafts,
            GROUPS=self.groups, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, CHUNK=CHUNK,
            D=self.head_dim, PRECISION=precision)
        _combine[(self.heads, rows, blocks)](
            self.m, self.l, self.acc, meta, out, out.stride(0), out.stride(1), self.n_chunks, self.heads,
            blocks, rows, BLOCK_M=BLOCK_M, CHUNKS=triton.next_power_of_2(self.n_chunks), CHUNK=CHUNK,
            D=self.head_dim)
        return out
