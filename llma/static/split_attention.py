"""Split-KV attention for the static backend's fixed query block, in Triton.

Why: flash attention over a block of 2+ query rows runs one thread block per head over all the
keys in use, so most of a large GPU idles. Here the keys are cut into fixed chunks by absolute position
(chunk j holds keys [j * chunk, (j + 1) * chunk)); one program per (head, chunk) computes each
row's partial softmax over its chunk, and a second kernel combines the chunks in a fixed order.

Lossless by construction: a row's result depends only on its own query, its position and the
cache. Chunk bounds do not move with the block's start; keys a row may not see add exact zeros
(and tiles or chunks that no row sees are skipped, which changes nothing), so a token verified in
row 5 of an LLMA block gets the same bits as the same token in row 0 of a greedy step. With a
batch of blocks (a backend verifying several drafts side by side, each on its own copy of the
cache) a third program index picks the block: the same arithmetic on another block's data.

On CUDA the kernels are compiled by Triton. On CPU they run only in Triton's interpreter
(TRITON_INTERPRET=1 set before triton is imported; slow): the test suite checks their logic so.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

CHUNK = 128  # keys per chunk: ~9 active chunks per head at 1k keys, ~80 programs for SmolLM2
BLOCK_N = 64  # keys per tile inside a chunk
NO_WINDOW = 1 << 30  # the window of full attention: past any position (pos - window stays in int32)


@triton.jit
def _partial(q_ptr, k_ptr, v_ptr, pos_ptr, packed_ptr, m_ptr, l_ptr, acc_ptr,  # noqa: ANN001, ANN202 (Triton)
             stride_qr, stride_qh, stride_kb, stride_kh, stride_kn, n_keys, n_chunks, rows, heads, scale, window,
             GROUPS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, CHUNK: tl.constexpr,
             D: tl.constexpr, PRECISION: tl.constexpr, PACKED: tl.constexpr):
    """Program (head h, chunk j, block b): for each row r, the max m, the sum of exponentials (stored
    in l) and the unnormalised output acc of softmax(q_r . k) over chunk j's keys at positions <= pos + r
    and > pos + r - window (no window: `window` past any position).

    PACKED (one block holding several drafts after the same last token, see SplitAttention): program
    index 2 is a draft g instead; row r is at position pos + rel[r] and reads the keys after pos from
    its draft's slots, so a chunk holding keys past pos is computed once per draft, for its rows."""
    h, j, b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    r, d = tl.arange(0, BLOCK_M), tl.arange(0, D)
    pos = tl.load(pos_ptr)
    last = pos + rows - 1  # the block's last position: keys after it are seen by no row
    first = pos - window + 1  # the block's first row's first key: keys before it are seen by no row
    start = j * CHUNK
    if PACKED:
        rel = tl.load(packed_ptr + r, mask=r < rows, other=0)
        draft = tl.load(packed_ptr + rows + r, mask=r < rows, other=-1)
        shift = tl.load(packed_ptr + 2 * rows + b)  # draft b's keys after pos: slot = position + shift
        shared = start + CHUNK <= pos + 1  # every key at or before pos: the same for every draft
        mine = tl.where(shared, r < rows, draft == b)  # rows past the block: no draft (-1)
        run = (start <= last) & ((b == 0) | (start + CHUNK > pos + 1)) & (tl.max(mine.to(tl.int32), 0) > 0)
        run = run & (start + CHUNK > first)
        blk = 0  # one block, one cache
    else:
        rel, mine, shift, run, blk = r, r < rows, 0, (start <= last) & (start + CHUNK > first), b
    q_ptr += blk * rows * stride_qr  # block blk's rows, and its own cache
    k_ptr += blk * stride_kb
    v_ptr += blk * stride_kb
    if run:
        q = tl.load(q_ptr + r[:, None] * stride_qr + h * stride_qh + d[None, :], mask=r[:, None] < rows,
                    other=0.0)
        kv = (h // GROUPS) * stride_kh
        m = tl.full([BLOCK_M], float("-inf"), tl.float32)
        total = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, D], tl.float32)
        for t in range(0, CHUNK, BLOCK_N):
            if (start + t <= last) & (start + t + BLOCK_N > first):
                n = start + t + tl.arange(0, BLOCK_N)  # key positions
                if PACKED:
                    slot = tl.where(n > pos, n + shift, n)[:, None]
                else:
                    slot = n[:, None]
                inside = slot < n_keys
                k = tl.load(k_ptr + kv + slot * stride_kn + d[None, :], mask=inside, other=0.0)
                s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale
                at = pos + rel[:, None]  # the rows' positions
                s = tl.where((n[None, :] <= at) & (n[None, :] > at - window), s, float("-inf"))
                m_new = tl.maximum(m, tl.max(s, 1))
                m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row with no key yet: p = 0
                p = tl.exp(s - m_safe[:, None])
                alpha = tl.exp(m - m_safe)
                v = tl.load(v_ptr + kv + slot * stride_kn + d[None, :], mask=inside, other=0.0)
                total = total * alpha + tl.sum(p, 1)
                acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
                m = m_new
        at = ((blk * heads + h) * n_chunks + j) * BLOCK_M + r
        tl.store(m_ptr + at, m, mask=mine)  # PACKED: another draft's program writes the other rows
        tl.store(l_ptr + at, total, mask=mine)
        tl.store(acc_ptr + at[:, None] * D + d[None, :], acc, mask=mine[:, None])


@triton.jit
def _combine(m_ptr, l_ptr, acc_ptr, pos_ptr, packed_ptr, out_ptr,  # noqa: ANN001, ANN202 (a Triton kernel)
             stride_or, stride_oh, n_chunks, rows, heads, window,
             BLOCK_M: tl.constexpr, CHUNKS: tl.constexpr, CHUNK: tl.constexpr, D: tl.constexpr,
             PACKED: tl.constexpr):
    """Program (head h, row r, block b): the chunks holding keys the row sees (a fixed set for its
    position), rescaled to their common max and summed in chunk order."""
    h, r, b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    pos = tl.load(pos_ptr) + (tl.load(packed_ptr + r) if PACKED else r)  # the row's position
    c, d = tl.arange(0, CHUNKS), tl.arange(0, D)
    # each chunk holding a key the row sees (at or before it, within the window): its m is finite
    seen = (c * CHUNK <= pos) & (c < n_chunks) & ((c + 1) * CHUNK > pos - window + 1)
    at = ((b * heads + h) * n_chunks + c) * BLOCK_M + r
    m = tl.load(m_ptr + at, mask=seen, other=float("-inf"))
    w = tl.where(seen, tl.exp(m - tl.max(m, 0)), 0.0)
    total = tl.load(l_ptr + at, mask=seen, other=0.0)
    acc = tl.load(acc_ptr + at[:, None] * D + d[None, :], mask=seen[:, None], other=0.0)
    out = tl.sum(acc * w[:, None], 0) / tl.sum(total * w, 0)
    tl.store(out_ptr + (b * rows + r) * stride_or + h * stride_oh + d, out.to(out_ptr.dtype.element_ty))


class SplitAttention:
    """Buffers and launches for one (block, key capacity, batch of blocks) shape; reused by every
    layer and step.

    `packed` = N > 0: one block holds up to N drafts, all following the block's first row (the last
    token, at `pos`): each call then takes `packed_info`, a device tensor of 2 * block + N ints:
    per row its position after pos (`rel`), per row its draft, per draft the shift from a key's
    position to its slot in the cache (the keys after pos: draft g's rows sit in the block's slots
    from pos + 1 + shift[g]). A row then sees exactly the keys a one-draft block would have at its
    position, in the same lanes, so its bits are those of greedy's step at that position."""

    def __init__(self, block: int, heads: int, kv_heads: int, head_dim: int, capacity: int,
                 scale: float, device: torch.device, batch: int = 1, packed: int = 0) -> None:
        if block > 128 or head_dim not in (16, 32, 64, 128, 256):
            raise ValueError(f"split attention needs a block <= 128 and a power-of-two head size 16-256, "
                             f"got block {block}, head size {head_dim}")
        if packed and batch != 1:
            raise ValueError("split attention: packed drafts need one block (batch 1)")
        self.block = block
        self.heads = heads
        self.groups = heads // kv_heads
        self.head_dim = head_dim
        self.batch = batch
        self.packed = packed
        self.rows = max(16, triton.next_power_of_2(block))  # tl.dot needs 16+ rows
        self.n_chunks = -(-capacity // CHUNK)
        if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
            raise ValueError("split attention runs on CUDA, or on CPU in Triton's interpreter "
                             "(TRITON_INTERPRET=1 before triton is imported: for tests)")
        self.scale = scale
        f32 = {"dtype": torch.float32, "device": device}
        self.m = torch.empty(batch * heads * self.n_chunks * self.rows, **f32)
        self.l = torch.empty_like(self.m)
        self.acc = torch.empty(batch * heads * self.n_chunks * self.rows * head_dim, **f32)

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor,
                 packed_info: torch.Tensor | None = None, window: int | None = None) -> torch.Tensor:
        """q [batch * block, heads, head_dim] (each block's rows in position order from `pos`, a
        1-element device tensor); k, v [batch, kv_heads, capacity, head_dim] (or, for one block,
        [kv_heads, capacity, head_dim]), already holding the blocks' keys. Returns q's shape.
        `window`: a row at position p sees only the keys at (p - window, p] (a sliding window)."""
        k, v = (k[None], v[None]) if k.dim() == 3 else (k, v)
        b, d = self.block, self.head_dim
        if (q.stride(-1) != 1 or k.stride(-1) != 1 or k.stride() != v.stride() or q.shape[0] != b * self.batch
                or k.shape[0] != self.batch or (packed_info is None) != (self.packed == 0)
                or (packed_info is not None and packed_info.numel() != 2 * b + self.packed)):
            raise ValueError("split attention: unexpected layout, block size, batch or packed drafts")
        info = pos if packed_info is None else packed_info  # an unused pointer when nothing is packed
        out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
        precision = "ieee" if q.dtype == torch.float32 else "tf32"
        packed = self.packed > 0
        window = NO_WINDOW if window is None else window
        if not 0 < window <= NO_WINDOW:
            raise ValueError(f"split attention: a window must be in 1..{NO_WINDOW}, got {window}")
        _partial[(self.heads, self.n_chunks, self.packed or self.batch)](
            q, k, v, pos, info, self.m, self.l, self.acc, q.stride(0), q.stride(1), k.stride(0), k.stride(1),
            k.stride(2), k.shape[2], self.n_chunks, b, self.heads, self.scale, window,
            GROUPS=self.groups, BLOCK_M=self.rows, BLOCK_N=BLOCK_N, CHUNK=CHUNK, D=d, PRECISION=precision,
            PACKED=packed)
        _combine[(self.heads, b, self.batch)](
            self.m, self.l, self.acc, pos, info, out, out.stride(0), out.stride(1), self.n_chunks, b,
            self.heads, window,
            BLOCK_M=self.rows, CHUNKS=triton.next_power_of_2(self.n_chunks), CHUNK=CHUNK, D=d, PACKED=packed)
        return out
