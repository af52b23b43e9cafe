"""The static backend for Llama-family models: preallocated KV cache, fixed query block, CUDA graphs.

Composed of the model's packed weights (`LlamaWeights`), the cache (`KVCache`), the fixed-shape
step (`Step`), the prefill (`Prefill`) and, on CUDA, the captured graphs (`GraphCache`). The design,
and why greedy and LLMA through it are bit-identical in any dtype, is in docs/DESIGN.md.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from llma.backend import Argmax, context_length_of, padded_length
from llma.options import ATTENTION
from llma.static.attention import attend_for, works
from llma.static.cache import KVCache
from llma.static.family import unsupported_reason
from llma.static.graphs import GraphCache, graph_length, upload
from llma.static.inputs import StepLayout
from llma.static.packing import PackedBlock, draft_caps, pack, single
from llma.static.prefill import Prefill
from llma.static.step import Step
from llma.static.weights import LlamaWeights

log = logging.getLogger(__name__)

DEFAULT_BLOCK = 32  # the last token and up to 31 drafted tokens (a multiple of 8: no ragged GEMM tile rows)


def _check_choices(attention: str, cache_copies: int, packed_drafts: int) -> None:
    if attention not in ATTENTION:
        raise ValueError(f"attention must be one of {ATTENTION}, got {attention!r}")
    if not isinstance(cache_copies, int) or not 1 <= cache_copies <= 64 or (
            cache_copies > 1 and attention == "flash"):
        raise ValueError(f"cache_copies must be an int in 1..64 (1 with flash attention), "
                         f"got {cache_copies!r}")
    if not isinstance(packed_drafts, int) or packed_drafts < 0 or (
            packed_drafts and (cache_copies > 1 or attention not in ("sdpa", "split"))):
        raise ValueError(f"packed_drafts must be an int >= 0 (one cache copy, sdpa or split attention), "
                         f"got {packed_drafts!r} with cache_copies={cache_copies}, attention={attention!r}")


class StaticBackend:
    """The Backend protocol (llma.backend) over a static KV cache and fixed-shape steps.

    Every step, greedy or LLMA, runs one forward over `cache_copies` blocks of `block` query rows
    (the last token, up to `block - 1` drafted tokens, padding), so every step runs the same kernels
    with the same shapes. `packed_drafts` = N > 0 packs up to N drafts into the one block
    (llma.static.packing); `cache_copies` > 1 verifies one draft per block, each on its own copy of
    the cache. `attention`: "sdpa" (fused kernel over L keys with a mask), "bmm" (scores GEMM,
    softmax, values GEMM), "flash" (CUDA: reads only the keys before each query) or "split"
    (Triton split-KV kernels, llma/static/split_attention.py); "flash" and "split" fall back to
    "sdpa" where their self-check fails. `graphs`: capture the steps and prefills in CUDA graphs
    (default: on a CUDA device). `compile`: torch.compile the pure parts of each layer.
    `max_len` caps the context; `min_bucket` is the smallest attention length.
    """

    def __init__(self, model: PreTrainedModel, *, block: int = DEFAULT_BLOCK, graphs: bool | None = None,
                 max_len: int | None = None, min_bucket: int = 128, attention: str = "sdpa",
                 compile: bool = False, cache_copies: int = 1, packed_drafts: int = 0) -> None:
        reason = unsupported_reason(model, full=True)
        if reason is not None:
            raise ValueError(f"StaticBackend cannot run {type(model).__name__}: {reason}")
        _check_choices(attention, cache_copies, packed_drafts)
        self.device = model.device
        self.graphs = self.device.type == "cuda" if graphs is None else graphs
        if self.graphs and self.device.type != "cuda":
            raise ValueError("CUDA graphs need a CUDA device")
        self.block = block
        self.min_bucket = min_bucket
        self.cache_copies = cache_copies
        self.packed_drafts = packed_drafts
        self.compile = compile
        self.draft_caps = draft_caps(block, packed_drafts) if packed_drafts else ()  # checks that they fit
        self.layout = StepLayout(block, cache_copies, packed_drafts)
        self._context_length = min(context_length_of(model), max_len or 16384)
        # Capacity: any block starting inside the context fits; a multiple of 64 keeps views aligned.
        self.capacity = -(-(self._context_length + block) // 64) * 64
        with torch.no_grad():
            self.weights = LlamaWeights(model, self.capacity, compile)
            w = self.weights
            self.cache = KVCache(len(w.layers), cache_copies, w.kv_heads, self.capacity, w.head_dim, w.dtype,
                                 self.device)
        self.graph_cache = GraphCache(self.device) if self.graphs else None
        self.step = Step(self.weights, self.cache, attention)
        self.prefill_run = Prefill(self.weights, self.cache, self.graph_cache)
        self.attention = attention
        if attention in ("flash", "split") and not self._kernel_works(attention):
            self.attention = "sdpa"
            self.step.attention = "sdpa"
        self._reserve = 256
        self.key_length = min_bucket  # the attention length L of the sequence (keys a step covers)
        self._packed: PackedBlock | None = None  # the last forward_rows' block, for keep

    def _kernel_works(self, attention: str) -> bool:
        w = self.weights
        attend = attend_for(attention, w.heads, w.kv_heads, w.head_dim, w.scale, self.step.flash_offsets)
        return works(attention, attend, w.heads, w.kv_heads, w.head_dim, self.capacity, w.scale, w.dtype,
                     self.device, windowed=any(x is not None for x in w.windows))

    # --- the Backend protocol ---
    @property
    def name(self) -> str:
        parts = ["static-graphs" if self.graphs else "static"]
        if self.compile:
            parts.append("compile")
        if self.cache_copies > 1:
            parts.append(f"rows{self.cache_copies}")
        if self.packed_drafts:
            parts.append(f"tree{self.packed_drafts}")
        return "+".join(parts)

    @property
    def context_length(self) -> int:
        return self._context_length

    @property
    def cached(self) -> int:
        """Tokens in the cache."""
        return self.cache.length

    @property
    def max_draft(self) -> int:
        """A draft this long fits one block with the last token."""
        return self.block - 1

    @property
    def drafts_per_step(self) -> int:
        return self.packed_drafts or self.cache_copies

    @property
    def needs_warm_up(self) -> bool:
        """CUDA graphs are captured (and compiled) on first use."""
        return self.graphs

    def reserve(self, new_tokens: int) -> None:
        """Tokens the next generation may add after its prompt: sizes the attention length L, fixed for
        the sequence (greedy and LLMA see the same L); one that outgrows it moves to a larger L midway."""
        self._reserve = max(0, int(new_tokens))

    def attention_length(self, need: int) -> int:
        """Attention length for `need` keys: powers of two to 512, then multiples of 512 (flash and
        split: the capacity, as they read only the keys in use)."""
        if self.attention in ("flash", "split") or need > self.capacity:
            return self.capacity
        size = self.min_bucket
        while size < min(need, 512):
            size *= 2
        return min(size if need <= 512 else -(-need // 512) * 512, self.capacity)

    @torch.no_grad()
    def prefill(self, ids: Sequence[int]) -> torch.Tensor:
        n = len(ids)
        if not 0 < n <= self._context_length:
            raise ValueError(f"prefill needs 1 to {self._context_length} tokens, got {n}")
        self.key_length = self.attention_length(n + self._reserve + self.block)
        # Padded: a bounded set of shapes, as every new shape costs host memory for good (eager: to a
        # multiple of PREFILL_PAD; graphs: to a graph_length, as each graph also holds GPU memory).
        # Causal attention keeps the padding out of the real rows; its keys land past the sequence,
        # where later steps overwrite them before reading.
        m = (graph_length if self.graphs else padded_length)(n, self.capacity)
        tokens = torch.tensor(list(ids) + [0] * (m - n), dtype=torch.long)
        x = self.prefill_run(tokens)
        self.cache.start_sequence(n)
        return self.weights.logits(x[n - 1 : n]).float()

    @torch.no_grad()
    def forward(self, ids: Sequence[int]) -> torch.Tensor:
        ids = list(ids)
        if not ids:
            raise ValueError("forward() needs at least one token")
        self._check_room(len(ids))
        rows = []
        for start in range(0, len(ids), self.block):
            chunk = ids[start : start + self.block]
            logits, _, _ = self._launch([chunk], packed=False)
            rows.append(logits[: len(chunk)].to(torch.float32, copy=True))  # the next replay overwrites it
            self.cache.append(len(chunk))
        return rows[0] if len(rows) == 1 else torch.cat(rows)

    @torch.no_grad()
    def forward_rows(self, rows: Sequence[Sequence[int]]) -> torch.Tensor:
        """Up to `drafts_per_step` token lists of up to `block` tokens each (packed: all starting with
        the same token, `block` together), all appended after the cached tokens, in one step: logits
        [len(rows), longest, vocab]. Follow with `keep`."""
        rows = [list(r) for r in rows]
        longest = self._check_rows(rows)
        logits, _, index = self._launch(rows, packed=True)
        self.cache.append(longest, several=True)
        padded = [i + [0] * (longest - len(i)) for i in index]  # padding: never read
        at = torch.tensor(padded, device=self.device)
        return logits[at].float()  # a new tensor: the next replay leaves it be

    @torch.no_grad()
    def forward_argmax(self, rows: Sequence[Sequence[int]]) -> Argmax:
        """`forward` (one row of up to `block` tokens; follow with `trim`) or `forward_rows` (several;
        follow with `keep`), giving each row's argmax, made in the step, instead of its logits."""
        rows = [list(r) for r in rows]
        several = len(rows) > 1
        if several:
            longest = self._check_rows(rows)
        elif 1 <= len(rows[0]) <= self.block:
            longest = len(rows[0])
            self._check_room(longest)
        else:
            raise ValueError(f"forward_argmax needs 1 to {self.block} tokens in a row, got {len(rows[0])}")
        _, best, index = self._launch(rows, packed=several)
        self.cache.append(longest, several=several)
        return Argmax(best, tuple(map(tuple, index)))

    def keep(self, row: int, length: int) -> None:
        """After `forward_rows`: keep `row`'s tokens up to `length` in the sequence, in every copy."""
        if not 0 <= row < self.drafts_per_step:
            raise ValueError(f"keep needs a row < {self.drafts_per_step}, got {row}")
        if self.packed_drafts:  # moved by the next step, in its graph: a launch now costs host time
            shift = self._packed.shift[row] if self._packed is not None else 0  # None: keep refuses
            self.cache.keep_packed(shift, length)
        else:
            self.cache.keep_copy(row, length)

    def trim(self, length: int) -> None:
        self.cache.trim(length)

    def _check_rows(self, rows: list[list[int]]) -> int:
        """forward_rows' rows checked; their longest length."""
        longest = max(map(len, rows), default=0)
        most = self.drafts_per_step
        if not 1 <= len(rows) <= most or not 1 <= min(map(len, rows)) <= longest <= self.block:
            raise ValueError(f"forward_rows needs 1 to {most} rows of 1 to {self.block} tokens")
        self._check_room(longest)
        return longest

    def _check_room(self, n: int) -> None:
        cached = self.cache.length
        if cached == 0 or cached + n > self._context_length:
            raise ValueError(f"{n} tokens on {cached} cached (0: no prefill yet) exceed the context "
                             f"{self._context_length} or come before a prefill")

    def _launch(self, rows: list[list[int]],
                packed: bool) -> tuple[torch.Tensor, torch.Tensor, list[list[int]]]:
        """One step over `rows` after the cached tokens (one row: consecutive tokens; `packed`: drafts
        after the same last token, as forward_rows takes them): the step's logits and argmax (on the
        device; the next replay overwrites them) and, per row, the block rows holding its logits."""
        pos = self.cache.length
        if pos + self.block > self.key_length:  # past the reservation: a larger L from here on
            self.key_length = self.attention_length(pos + self.block)
            log.debug("sequence outgrew its reservation; attention length now %d", self.key_length)
        if self.packed_drafts:  # consecutive tokens: one draft in a packed block (the same kernels)
            if packed:
                block = pack(rows, self.block, self.packed_drafts)
            else:
                block = single(rows[0], self.block, self.packed_drafts)
            self._packed = block if packed else None
            logits, best = self._run(block.ids, pos, block.info())
            return logits, best, block.index
        padded = [r + [0] * (self.block - len(r)) for r in rows]
        padded += padded[:1] * (self.cache_copies - len(rows))  # spare copies repeat the first: same keys
        logits, best = self._run([t for r in padded for t in r], pos)
        index = [list(range(c * self.block, c * self.block + len(r))) for c, r in enumerate(rows)]
        return logits, best, index

    def _run(self, block_ids: list[int], pos: int,
             info: Sequence[int] = ()) -> tuple[torch.Tensor, torch.Tensor]:
        """One step over `block_ids` (every copy's block) from `pos`; a packed block also gives its
        `info` (PackedBlock.info) and the pending move of a kept draft. One upload a step."""
        move = self.cache.take_move()
        values = self.layout.flat(block_ids, pos, info, move)
        if self.graph_cache is None:
            return self.step(upload(values, self.device), self.layout, self.key_length)
        captured = self.step_graph(self.layout, self.key_length, pos)
        upload(values, self.device, into=captured.inp)
        return captured.replay()

    def step_graph(self, layout: StepLayout, length: int, pos: int):  # noqa: ANN201 (graphs.Captured)
        """The captured step for (`layout`, attention length `length`), made on first use. Its warm-up
        and capture write keys at positions >= `pos` (past the sequence), which later steps overwrite
        before reading."""
        def static_input() -> torch.Tensor:
            inp = torch.zeros(layout.size, dtype=torch.long, device=self.device)
            inp[layout.copies * layout.block] = pos  # the start position: after the ids
            return inp

        return self.graph_cache.step((layout.block, length), static_input,
                                     lambda inp: self.step(inp, layout, length))
