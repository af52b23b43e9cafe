"""The batch engine's decoding step in fixed shapes: one CUDA graph per bucket.

A step over n requests' blocks (each its last token and packed drafts) runs in the shape of its
bucket (`Shape`): `blocks` requests (n rounded up to a power of two; the extra blocks are dummies in
the runner's scratch slot), `rows` per block (the longest block, rounded up; a block's extra rows
continue its first draft and are never read), up to `drafts` drafts per block, and `chunks` key
chunks (a bound on the positions in use). Each shape is captured once in a CUDA graph and replayed;
off CUDA (the tests, under Triton's interpreter) the same function runs eagerly.

Prompt chunks run here too (`launch` of `prompt` blocks, in shapes of their own): a chunk is cut
into pieces of up to `BLOCK_M` consecutive rows, each a one-draft block at its own position, whose
keys are all written before any row attends; so a prompt is as fast as a decoding step per row.

Rows keep their bits whatever the bucket: the products run over whole row tiles of a row count the
runner checked at start-up (llma.batch.rows) and the attention is llma.batch.split_attention's.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from llma.batch.cache import SlotCache
from llma.batch.rows import padded
from llma.batch.split_attention import BLOCK_M, CHUNK, BatchAttention, metadata
from llma.batch.step import Block, BlockOut, split_out
from llma.static.graphs import Captured, capture, upload

log = logging.getLogger(__name__)

ROWS = (1, 2, 4, 8, 16, 32)  # the rows-per-block buckets
DRAFTS = (1, 2, 4)  # the drafts-per-block buckets


def _up(n: int, sizes: Sequence[int]) -> int:
    return next(s for s in sizes if s >= n)


def _pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


@dataclass(frozen=True)
class Shape:
    """A step's fixed shape: `blocks` x `rows` query rows, up to `drafts` drafts a block, `chunks`
    key chunks (positions < chunks * CHUNK); `prompt`: prompt pieces (a graph apart from the decoding
    steps', so a step's two launches never share output buffers)."""

    blocks: int
    rows: int
    drafts: int
    chunks: int
    prompt: bool = False

    @staticmethod
    def of(blocks: Sequence[Block], max_blocks: int, prompt: bool = False) -> Shape:
        rows = _up(max(map(len, blocks)), ROWS)
        last = max(b.pos for b in blocks) + rows - 1
        return Shape(min(_pow2(len(blocks)), max_blocks), rows, _up(max(len(b.shifts) for b in blocks), DRAFTS),
                     max(2, _pow2(last // CHUNK + 1)), prompt)

    @property
    def size(self) -> int:
        """Query rows: blocks * rows."""
        return self.blocks * self.rows


def pieces(chunk: Block) -> list[Block]:
    """A prompt chunk as one-draft blocks of up to BLOCK_M consecutive rows, at their positions."""
    out = []
    for at in range(0, len(chunk), BLOCK_M):
        ids = chunk.ids[at : at + BLOCK_M]
        n = len(ids)
        out.append(Block(chunk.slot, chunk.pos + at, ids, tuple(range(n)), (0,) * n, (0,), chunk.length, ()))
    return out


class Launched:
    """A queued step: `result()` waits for the device (releasing the GIL, so other threads run
    meanwhile) and returns per block its `BlockOut`."""

    def __init__(self, blocks: Sequence[Block], starts: list[int], logits: torch.Tensor,
                 argmax: torch.Tensor) -> None:
        self.blocks = blocks
        self.starts = starts
        self.logits = logits
        if argmax.device.type == "cuda":  # copied to pinned memory behind the step, then waited for
            self.argmax = torch.empty(argmax.shape, dtype=argmax.dtype, pin_memory=True)
            self.argmax.copy_(argmax, non_blocking=True)
            self.done: torch.cuda.Event | None = torch.cuda.Event()
            self.done.record()
        else:
            self.argmax = argmax
            self.done = None

    def result(self) -> list[BlockOut]:
        if self.done is not None:
            self.done.synchronize()
        return split_out(self.blocks, self.logits, self.starts, self.argmax.tolist())


class GraphStep:
    """`step(blocks)`: per block its `BlockOut` after one forward over decoding blocks (packed, from
    `Block.packed`), in their bucket's shape; with `graphs` (CUDA) each shape is captured on first use.

    `scratch`: a cache slot no request uses (the dummy blocks write there); `tile`: the row tile
    every product's row count is padded to; `max_blocks`: the most blocks (or prompt pieces) a step
    holds."""

    def __init__(self, weights, cache: SlotCache, scratch: int, tile: int, graphs: bool,  # noqa: ANN001
                 max_blocks: int) -> None:
        self.weights = weights
        self.cache = cache
        self.scratch = scratch
        self.tile = tile
        self.graphs = graphs
        w = weights
        self.max_blocks = _pow2(max_blocks)
        self.attention = BatchAttention(w.heads, w.kv_heads, w.head_dim, cache.capacity, w.scale,
                                        self.max_blocks, w.device)
        self.captured: dict[Shape, Captured] = {}
        if graphs:
            self.side = torch.cuda.Stream(w.device)
            self.pool = torch.cuda.graph_pool_handle()

    def __call__(self, blocks: Sequence[Block]) -> list[BlockOut]:
        return self.launch(blocks).result()

    @torch.no_grad()
    def launch(self, blocks: Sequence[Block]) -> Launched:
        """The step queued on the device (with `graphs`: the host returns at once); its `result()`
        waits for it. `blocks`: decoding blocks, or prompt chunks (`Block.chunk`), not both."""
        prompt = blocks[0].prompt
        if any(b.prompt != prompt for b in blocks):
            raise ValueError("a fixed-shape step runs decoding blocks or prompt chunks, not both")
        parts = [p for b in blocks for p in pieces(b)] if prompt else list(blocks)
        if len(parts) > self.max_blocks:
            raise ValueError(f"a step takes at most {self.max_blocks} blocks, got {len(parts)}")
        shape = Shape.of(parts, self.max_blocks, prompt)
        values = self._inputs(parts, shape)
        if self.graphs:
            captured = self._graph(shape)
            upload(values, self.weights.device, into=captured.inp)
            logits, argmax = captured.replay()
        else:
            logits, argmax = self._forward(shape, upload(values, self.weights.device))
        firsts = [0]  # per block: its first piece (a chunk's pieces are consecutive rows)
        for b in blocks:
            firsts.append(firsts[-1] + (-(-len(b) // BLOCK_M) if prompt else 1))
        return Launched(blocks, [f * shape.rows for f in firsts[:-1]], logits, argmax)

    def _graph(self, shape: Shape) -> Captured:
        if shape not in self.captured:
            # A dummy batch's inputs first: every block in the scratch slot, so the warm-up runs of
            # the capture write nowhere a request reads.
            inp = torch.tensor(self._inputs([], shape), dtype=torch.long, device=self.weights.device)
            graph, out = capture(lambda x: self._forward(shape, x), inp, self.side, self.pool)
            self.captured[shape] = Captured(graph, inp, out)
            log.info("captured a CUDA graph for %s", shape)
        return self.captured[shape]

    def _inputs(self, blocks: Sequence[Block], shape: Shape) -> list[int]:
        """ids, positions, row slots, key slots [size] each, then the attention's metadata."""
        r = shape.rows
        ids: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        keys: list[int] = []
        roots, block_slots, rels, owners, shifts = [], [], [], [], []
        dummy = Block(self.scratch, 0, (0,), (0,), (0,), (0,), 0, ())
        for b in [*blocks, *[dummy] * (shape.blocks - len(blocks))]:
            n = len(b)
            rel = [*b.rel, *range(n, r)]  # the extra rows continue draft 0 (llma.static.packing.pack)
            ids += [*b.ids, *[0] * (r - n)]
            positions += [b.pos + x for x in rel]
            slots += [b.slot] * r
            keys += range(b.pos, b.pos + r)
            roots.append(b.pos)
            block_slots.append(b.slot)
            rels.append(rel)
            owners.append([*b.owner, *[0] * (r - n)])
            shifts.append(list(b.shifts))
        return ids + positions + slots + keys + metadata(roots, block_slots, rels, owners, shifts, shape.drafts)

    def _forward(self, shape: Shape, inp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """logits [size, vocab] and their argmax [size] for the step packed in `inp`."""
        w = self.weights
        n = shape.size
        m = padded(n, self.tile)
        ids, positions, slots, keys = inp[: 4 * n].view(4, n)
        meta = inp[4 * n :]

        def attend(i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            self.cache.write(i, slots, keys, k[:n], v[:n])
            out = self.attention(q[:n], self.cache.k[i], self.cache.v[i], meta, shape.blocks, shape.rows,
                                 shape.drafts, shape.chunks).view(n, -1)
            return out if m == n else torch.cat((out, out.new_zeros(m - n, out.shape[1])))

        ids = F.pad(ids, (0, m - n))
        positions = F.pad(positions, (0, m - n))
        x = w.run(F.embedding(ids, w.embed), w.cos[positions][:, None], w.sin[positions][:, None], attend,
                  step=True)
        logits = F.linear(x, w.lm_head)[:n]
        return logits, logits.argmax(-1)
