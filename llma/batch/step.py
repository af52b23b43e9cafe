"""One forward over every running request's block: the batch engine's step.

Each request contributes a `Block` (its last token and packed drafts, or a chunk of its prompt),
attends over its own cache slot only, and gets rows whose bits do not depend on the other blocks:
the products run over whole row tiles (llma.batch.rows) and each block's attention is computed on
its own, with its own attention length.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from llma.batch.cache import SlotCache
from llma.batch.rows import block_attention, block_mask, chunk_attention, chunk_mask, key_span, pad_rows, padded
from llma.cpu.glue import CGlue
from llma.static.packing import PackedBlock, pack


@dataclass(frozen=True)
class Block:
    """One request's rows in a step.

    slot: its cache slot; pos: the cached tokens (the first row's key goes to position `pos`);
    ids [rows]: tokens; rel [rows]: each row's position after `pos`; owner [rows]: each row's draft;
    shifts [drafts]: per draft, from a key's position after `pos` to its slot (row r's key is written
    at slot `pos + r`); length: the request's attention length L (fixed for its whole generation);
    out: the rows whose logits the step returns; prompt: a prompt chunk's rows (the eager step runs
    them; weights with separate prompt products, llma.cpu.weights.Int4Weights, run them through those).
    """

    slot: int
    pos: int
    ids: tuple[int, ...]
    rel: tuple[int, ...]
    owner: tuple[int, ...]
    shifts: tuple[int, ...]
    length: int
    out: tuple[int, ...]
    prompt: bool = False

    @staticmethod
    def chunk(slot: int, pos: int, ids: Sequence[int], length: int, last: bool = False,
              logits: bool = False) -> Block:
        """Consecutive tokens (a prompt chunk) after `pos`; the logits of its last row if `last` (the
        prompt's last chunk), of every row if `logits` (then not a `prompt` block), else none."""
        n = len(ids)
        out = tuple(range(n)) if logits else (n - 1,) if last else ()
        return Block(slot, pos, tuple(ids), tuple(range(n)), (0,) * n, (0,), length, out, not logits)

    @staticmethod
    def packed(slot: int, pos: int, rows: Sequence[Sequence[int]], length: int) -> tuple[Block, PackedBlock]:
        """Rows [last token, *draft] (the same last token) packed after `pos`; also the packing, whose
        `index` gives each draft's rows of logits and `shift` where its keys went."""
        used = 1 + sum(len(r) - 1 for r in rows)
        p = pack(rows, used, len(rows))
        return Block(slot, pos, tuple(p.ids), tuple(p.rel), tuple(p.draft), tuple(p.shift), length,
                     tuple(range(used))), p

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class BlockOut:
    """One block's `out` rows after a step: their argmax (host ints) and, on demand, their logits.

    `source` [rows, vocab] holds them (any float dtype): out row i is `source[rows[i]]`."""

    argmax: list[int]
    source: torch.Tensor
    rows: list[int]

    def logits(self, index: Sequence[int]) -> torch.Tensor:
        """The fp32 logits [len(index), vocab] of out rows `index` (negative counts from the end)."""
        picked = torch.tensor([self.rows[i] for i in index], dtype=torch.long, device=self.source.device)
        return self.source[picked].float()


def split_out(blocks: Sequence[Block], source: torch.Tensor, starts: Sequence[int],
              argmax: Sequence[int]) -> list[BlockOut]:
    """Per block its `BlockOut`: block i's row r is `source[starts[i] + r]`, its argmax
    `argmax[starts[i] + r]`."""
    outs = []
    for b, start in zip(blocks, starts):
        rows = [start + r for r in b.out]
        outs.append(BlockOut([argmax[i] for i in rows], source, rows))
    return outs


class BatchStep:
    """`step(blocks)`: per block its `BlockOut` (its `out` rows' argmax and fp32 logits) after one
    forward over `blocks`, their keys and values written into their slots first; every product over
    whole `tile`s. Eager: any blocks (prompt chunks too), on any device. `trim`: each block reads
    only the keys up to its `key_span`, not its whole attention length (for a machine where
    llma.batch.rows.span_invariant holds: the same bits, fewer keys read). `glue` (llma.cpu.glue,
    CPU only): the cache writes, and the attention of every block that is not a prompt chunk, in C
    (a row's bits depend on its query and the keys it sees only); prompt chunks as without it."""

    def __init__(self, weights, cache: SlotCache, tile: int, trim: bool = False, glue: CGlue | None = None  # noqa: ANN001 (LlamaWeights, Int4Weights)
                 ) -> None:
        self.weights = weights
        self.cache = cache
        self.tile = tile
        self.trim = trim
        self.glue = glue

    def span(self, b: Block) -> int:
        """The keys block `b` reads this step."""
        return key_span(b.length, b.pos + len(b)) if self.trim else b.length

    @torch.no_grad()
    def __call__(self, blocks: Sequence[Block]) -> list[BlockOut]:
        w = self.weights
        device = w.device
        n = sum(map(len, blocks))
        m = padded(n, self.tile)  # every product over whole row tiles: the padding rows are dropped at the end
        ids = torch.zeros(m, dtype=torch.long)
        positions = torch.zeros(m, dtype=torch.long)
        slots = torch.zeros(n, dtype=torch.long)
        prompt = torch.zeros(m, dtype=torch.bool)
        key_slots = torch.zeros(n, dtype=torch.long)
        out: list[int] = []
        starts: list[int] = []  # per block: its first row among the out rows
        at = 0
        for b in blocks:
            k = len(b)
            starts.append(len(out) - b.out[0] if b.out else 0)
            out += [at + r for r in b.out]
            ids[at : at + k] = torch.tensor(b.ids)
            positions[at : at + k] = b.pos + torch.tensor(b.rel)
            slots[at : at + k] = b.slot
            key_slots[at : at + k] = torch.arange(b.pos, b.pos + k)
            prompt[at : at + k] = b.prompt
            at += k
        ids, positions, slots, key_slots = (t.to(device) for t in (ids, positions, slots, key_slots))
        attend = (self._attention if self.glue is None else self._glued_attention)(blocks, n, m, slots, key_slots)
        x = w.run(F.embedding(ids, w.embed), w.cos[positions][:, None], w.sin[positions][:, None], attend,
                  step=True, prompt=prompt.to(device) if any(b.prompt for b in blocks) else None)
        logits = w.logits(pad_rows(x[torch.tensor(out, dtype=torch.long, device=device)], self.tile))
        logits = logits[: len(out)].float()
        return split_out(blocks, logits, starts, logits.argmax(-1).tolist())

    def _masks(self, b: Block) -> tuple:
        """What block `b`'s attention reads besides the cache, the same in every layer: its key span,
        then a prompt chunk's `chunk_mask`, or `block_attention`'s rel, owner, shifts and mask."""
        w = self.weights
        span = self.span(b)
        if b.prompt:
            return span, chunk_mask(span, b.pos, len(b), w.heads // w.kv_heads, w.device)
        rel, owner, shifts = (torch.tensor(t, device=w.device) for t in (b.rel, b.owner, b.shifts))
        order, bias = block_mask(span, b.pos, rel, shifts, w.heads // w.kv_heads, self.tile, w.dtype)
        return span, (rel, owner, shifts, (None if b.shifts == (0,) else order, bias))

    def _attend(self, layer: int, b: Block, masks: tuple, q: torch.Tensor) -> torch.Tensor:
        """Block `b`'s attention in `layer` over its slot, q [rows, heads, d] its rows' queries (a
        prompt chunk's fused, llma.batch.rows.chunk_attention; others by block_attention)."""
        w = self.weights
        span, extra = masks
        keys, values = self.cache.k[layer, b.slot, :, :span], self.cache.v[layer, b.slot, :, :span]
        if b.prompt:
            return chunk_attention(q, keys, values, w.scale, extra)
        rel, owner, shifts, mask = extra
        return block_attention(q, keys, values, b.pos, rel, owner, shifts, w.scale, self.tile, mask)

    def _glued_attention(self, blocks: Sequence[Block], n: int, m: int, slots: torch.Tensor,
                         key_slots: torch.Tensor) -> Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
        """`_attention` with the cache writes and the decoding blocks' attention in `self.glue`."""
        w, cache, glue = self.weights, self.cache, self.glue
        rows: list[int] = []
        meta: list[list[int]] = [[], [], [], []]  # per decoding row: slot, root, keys seen, shift
        prompts = []  # (first row, block, its masks)
        at = 0
        for b in blocks:
            if b.prompt:
                prompts.append((at, b, self._masks(b)))
            else:
                rows += range(at, at + len(b))
                for rel, owner in zip(b.rel, b.owner):
                    for column, value in enumerate((b.slot, b.pos, b.pos + rel + 1, b.shifts[owner])):
                        meta[column].append(value)
            at += len(b)
        decoding, meta_t = torch.tensor(rows, dtype=torch.long), torch.tensor(meta, dtype=torch.long)

        def attend(i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            glue.cache_write(cache.k[i], cache.v[i], k[:n], v[:n], slots, key_slots)
            out = q.new_zeros(m, w.heads * w.head_dim)
            if rows:
                glue.attend(q, cache.k[i], cache.v[i], decoding, meta_t, w.scale, out)
            for start, b, masks in prompts:
                out[start : start + len(b)] = self._attend(i, b, masks, q[start : start + len(b)])
            return out

        return attend

    def _attention(self, blocks: Sequence[Block], n: int, m: int, slots: torch.Tensor,
                   key_slots: torch.Tensor) -> Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
        w = self.weights
        cache = self.cache
        per_block = [self._masks(b) for b in blocks]  # once a step: the same in every layer

        def attend(i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            cache.write(i, slots, key_slots, k[:n], v[:n])
            outs = []
            at = 0
            for b, masks in zip(blocks, per_block):
                outs.append(self._attend(i, b, masks, q[at : at + len(b)]))
                at += len(b)
            if m > n:
                outs.append(q.new_zeros(m - n, w.heads * w.head_dim))
            return torch.cat(outs)

        return attend
