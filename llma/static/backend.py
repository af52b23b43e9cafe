"""The static backend for Llama-family models: preallocated KV cache, fixed query block, CUDA graphs.

On a GPU a small model's decoding step is bound by kernel launches, not arithmetic, and in bf16 a
forward over 1 token and one over 10 run kernels of different shapes whose logits differ in the last
bits, so a drafted token can flip an argmax that plain greedy would not have flipped.

Here every decoding step, greedy or LLMA, is one forward over a fixed block of `block` query slots:
the last token, the drafted tokens, then padding. Every step runs the same kernels with the same
shapes, and each row's result depends only on its own token and the cache, so LLMA through this
backend is bit-identical to greedy through it, in any dtype. The KV cache is preallocated
([layers, kv_heads, capacity, head_dim]) and written by position; `trim` only moves the position:
a query never sees keys past its own position, so stale or padding entries are never read.
Attention covers a key length L fixed per sequence (chosen at prefill from the prompt and the
reserved new tokens; "flash" and "split" attention read only the keys in use), so on CUDA each
(block, L) step is captured once in a CUDA graph and replayed. The prefill is one causal forward
over the padded prompt; on CUDA it too is a graph, one per padded length (a prompt costs one
replay instead of hundreds of kernel launches). Each step also takes its rows' argmax; the decoder's
greedy and forced verifiers read only that (`forward_argmax`), not the [rows, vocab] logits.

With `rows` > 1 every step runs `rows` blocks side by side, each on its own copy of the cache
([layers, rows, kv_heads, capacity, head_dim]): `forward_rows` verifies several drafts at once
and `keep` copies the chosen block's new entries to the other copies. Greedy steps through such a
backend run the same block in every row, so greedy and LLMA still run the same shapes.

With `tree` = N, `forward_rows` packs up to N drafts into the one block instead, on the one cache
(llma/static/tree.py): the drafts share the step's cost, and `keep` moves the kept draft's keys
into place. Every step, greedy's too, then runs the packed block's kernels. `select_backend`
packs 4 by default on CUDA (llma.static.support.static_options).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from llma.backend import Argmax, context_length_of, padded_length
from llma.static.attention import attend_for, flash, works
from llma.static.graphs import CapturedSteps, graph_length, upload
from llma.static.prefill import Prefill
from llma.static.support import unsupported_reason
from llma.static.tree import NO_MOVE, PackedBlock, draft_caps, move_kept, pack, per_draft_attention, single

log = logging.getLogger(__name__)

DEFAULT_BLOCK = 32  # the last token and up to 31 drafted tokens (a multiple of 8: no ragged GEMM tile rows)
ATTENTION = ("sdpa", "bmm", "flash", "split")

class StaticBackend(Prefill, CapturedSteps):
    """The Backend protocol over a static KV cache and fixed-shape steps (see the module docstring)."""

    def __init__(self, model: PreTrainedModel, *, block: int = DEFAULT_BLOCK, graphs: bool | None = None,
                 max_len: int | None = None, min_bucket: int = 128, attention: str = "sdpa",
                 compile: bool = False, rows: int = 1, tree: int = 0) -> None:
        """`attention` in a step: "sdpa" (fused kernel over L keys with a mask), "bmm" (scores GEMM,
        softmax, values GEMM), "flash" (CUDA: flash attention reading only the keys before each
        query, via a key count on the device) or "split" (Triton split-KV kernels reading only those
        keys, llma/static/split_attention.py); "flash" and "split" fall back to "sdpa" if their
        self-check fails. `compile`: torch.compile the pure parts of each layer."""
        reason = unsupported_reason(model)
        if reason is not None:
            raise ValueError(f"StaticBackend cannot run {type(model).__name__}: {reason}")
        if attention not in ATTENTION:
            raise ValueError(f"attention must be one of {ATTENTION}, got {attention!r}")
        if not isinstance(rows, int) or not 1 <= rows <= 64 or (rows > 1 and attention == "flash"):
            raise ValueError(f"rows must be an int in 1..64 (1 with flash attention), got {rows!r}")
        if not isinstance(tree, int) or tree < 0 or (tree and (rows > 1 or attention not in ("sdpa", "split"))):
            raise ValueError(f"tree must be an int >= 0 (drafts packed per block; one row, sdpa or split "
                             f"attention), got {tree!r} with rows={rows}, attention={attention!r}")
        self.attention, self.compile, self.rows, self.tree = attention, compile, rows, tree
        self.draft_caps = draft_caps(block, tree) if tree else None  # checks that the drafts fit
        self.device, self.block, self.min_bucket = model.device, block, min_bucket
        self.graphs = self.device.type == "cuda" if graphs is None else graphs
        if self.graphs and self.device.type != "cuda":
            raise ValueError("CUDA graphs need a CUDA device")
        self.name = ("static-graphs" if self.graphs else "static") + ("+compile" if compile else "") + (
            f"+rows{rows}" if rows > 1 else "") + (f"+tree{tree}" if tree else "")
        self._context_length = min(context_length_of(model), max_len or 16384)
        # Capacity: any block starting inside the context fits; a multiple of 64 keeps views aligned.
        self.capacity = -(-(self._context_length + block) // 64) * 64
        with torch.no_grad():
            self._load(model, self.capacity, compile)
            shape = (2, len(self.layers), rows, self.kv_heads, self.capacity, self.head_dim)
            # Keys and values in one tensor (k and v are views of it): `keep` moves both in one copy.
            self.kv = torch.zeros(shape, dtype=self.dtype, device=self.device)
            self.k, self.v = self.kv[0], self.kv[1]
        self._len, self._reserve, self._L, self._start = 0, 256, min_bucket, None
        self._packed: PackedBlock | None = None  # the last forward_rows' block, for keep (tree)
        self._move = NO_MOVE  # tree: the kept draft's keys, moved by the next step (llma.static.tree.move_kept)
        self._graphs: dict[tuple[int, int], tuple[torch.cuda.CUDAGraph, torch.Tensor, tuple]] = {}
        self._prefills: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]] = {}
        self._pool = torch.cuda.graph_pool_handle() if self.graphs else None  # shared by the prefill graphs
        self._side = torch.cuda.Stream(self.device) if self.graphs else None  # every capture's warm-up
        self._cu: dict[tuple[int, int], tuple[torch.Tensor, ...]] = {}
        self._split: dict[int, Callable[..., torch.Tensor]] = {}
        if attention in ("flash", "split") and not works(
                attention, attend_for(attention, self.heads, self.kv_heads, self.head_dim, self.scale, self._cu),
                self.heads, self.kv_heads, self.head_dim, self.capacity, self.scale, self.dtype, self.device):
            self.attention = "sdpa"

    # --- the Backend protocol ---
    context_length = property(lambda self: self._context_length)
    cached = property(lambda self: self._len)  # tokens in the cache
    max_draft = property(lambda self: self.block - 1)  # a draft this long fits one block with the last token
    drafts_per_step = property(lambda self: self.tree or self.rows)

    def reserve(self, new_tokens: int) -> None:
        """Tokens the next generation may add after its prompt: sizes the attention length L, fixed for
        the sequence (greedy and LLMA see the same L); one that outgrows it moves to a larger L midway."""
        self._reserve = max(0, int(new_tokens))

    def _bucket(self, need: int) -> int:
        """Attention length for `need` keys: powers of two to 512, then multiples of 512 (flash: all)."""
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
        self._L = self._bucket(n + self._reserve + self.block)
        # Padded: a bounded set of shapes, as every new shape costs host memory for good (eager: to a
        # multiple of PREFILL_PAD; graphs: to a graph_length, as each graph also holds GPU memory).
        # Causal attention keeps the padding out of the real rows; its keys land past the sequence,
        # where later steps overwrite them before reading (as in the graph warm-up).
        m = (graph_length if self.graphs else padded_length)(n, self.capacity)
        tokens = torch.tensor(list(ids) + [0] * (m - n), dtype=torch.long)
        x = self._prefill_graph(tokens) if self.graphs else self._prefill_states(tokens.to(self.device))
        self._len, self._move = n, NO_MOVE
        return F.linear(x[n - 1 : n], self.lm_head).float()

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
            rows.append(logits[: len(chunk)].to(torch.float32, copy=True))  # the next replay overwrites `logits`
            self._len += len(chunk)
        return rows[0] if len(rows) == 1 else torch.cat(rows)

    @torch.no_grad()
    def forward_rows(self, rows: Sequence[Sequence[int]]) -> torch.Tensor:
        """Up to `drafts_per_step` token lists of up to `block` tokens each (tree: all starting with the
        same token, `block` together), all appended after the cached tokens, in one step: logits
        [len(rows), longest, vocab]. Follow with `keep`."""
        rows = [list(r) for r in rows]
        longest = self._check_rows(rows)
        logits, _, index = self._launch(rows, packed=True)
        self._start, self._len = self._len, self._len + longest
        at = torch.tensor([i + [0] * (longest - len(i)) for i in index], device=self.device)  # padding: never read
        return logits[at].float()  # a new tensor: the next replay leaves it be

    @torch.no_grad()
    def forward_argmax(self, rows: Sequence[Sequence[int]]) -> Argmax:
        """`forward` (one row of up to `block` tokens; follow with `trim`) or `forward_rows` (several;
        follow with `keep`), giving each row's argmax, made in the step, instead of its logits."""
        rows = [list(r) for r in rows]
        if len(rows) > 1:
            longest = self._check_rows(rows)
        elif 1 <= len(rows[0]) <= self.block:
            longest = len(rows[0])
            self._check_room(longest)
        else:
            raise ValueError(f"forward_argmax needs 1 to {self.block} tokens in a row, got {len(rows[0])}")
        _, best, index = self._launch(rows, packed=len(rows) > 1)
        if len(rows) > 1:
            self._start = self._len
        self._len += longest
        return Argmax(best, tuple(map(tuple, index)))

    def _check_rows(self, rows: list[list[int]]) -> int:
        """forward_rows' rows checked; their longest length."""
        longest, most = max(map(len, rows), default=0), self.drafts_per_step
        if not 1 <= len(rows) <= most or not 1 <= min(map(len, rows)) <= longest <= self.block:
            raise ValueError(f"forward_rows needs 1 to {most} rows of 1 to {self.block} tokens")
        self._check_room(longest)
        return longest

    def _check_room(self, n: int) -> None:
        if self._len == 0 or self._len + n > self._context_length:
            raise ValueError(f"{n} tokens on {self._len} cached (0: no prefill yet) exceed the context "
                             f"{self._context_length} or come before a prefill")

    def _launch(self, rows: list[list[int]], packed: bool) -> tuple[torch.Tensor, torch.Tensor, list[list[int]]]:
        """One step over `rows` after the cached tokens (one row: consecutive tokens; `packed`: drafts
        after the same last token, as forward_rows takes them): the step's logits and argmax (on the
        device; the next replay overwrites them) and, per row, the block rows holding its logits."""
        pos = self._len
        if pos + self.block > self._L:  # past the reservation: a larger attention length from here on
            self._L = self._bucket(pos + self.block)
            log.debug("sequence outgrew its reservation; attention length now %d", self._L)
        if self.tree:  # consecutive tokens: one draft in a packed block (the same kernels as several)
            block = pack(rows, self.block, self.tree) if packed else single(rows[0], self.block, self.tree)
            self._packed = block if packed else None
            logits, best = self._run(block.ids, pos, self.block, self._L, block.info())
            return logits, best, block.index
        padded = [r + [0] * (self.block - len(r)) for r in rows]
        padded += padded[:1] * (self.rows - len(rows))  # spare rows repeat the first: same keys at `pos`
        logits, best = self._run([t for r in padded for t in r], pos, self.block, self._L)
        return logits, best, [list(range(c * self.block, c * self.block + len(r))) for c, r in enumerate(rows)]

    def keep(self, row: int, length: int) -> None:
        """After `forward_rows`: keep `row`'s tokens up to `length` in the sequence, in every copy."""
        if self._start is None or not 0 <= row < self.drafts_per_step or not self._start < length <= self._len:
            raise ValueError(f"keep needs a forward_rows before it, a row < {self.drafts_per_step} and a length "
                             f"in ({self._start}, {self._len}]")
        if self.tree:  # the kept draft's keys go to the slots after the root (draft 0's already are)
            n, shift = length - self._start - 1, self._packed.shift[row]
            # Moved by the next step, in its graph: a launch now would cost a free step's host time.
            self._move = (shift, self._start + 1, n) if n > 0 and shift > 0 else NO_MOVE
            self._len, self._start = length, None
            return
        # The kept row's new entries overwrite the others' (cloned first: source and target overlap).
        s = slice(self._start, length)
        self.kv[:, :, :, :, s] = self.kv[:, :, row : row + 1, :, s].clone()
        self._len, self._start = length, None

    def trim(self, length: int) -> None:
        if not 0 <= length <= self._len:
            raise ValueError(f"cannot trim a cache of {self._len} tokens to {length}")
        self._len, self._start = length, None  # rollback is moving the position: nothing is copied or cleared

    def _step(self, inp: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One fixed-shape step: `inp` = [ids of each row's block..., start position] (tree: then the
        packed block's info and the move of `keep`); returns the logits [rows * block, vocab] in the
        model's dtype and their argmax [rows * block].

        No host synchronisation and no data-dependent shapes inside: safe to capture in a CUDA graph.
        """
        r, kv, d, tree = self.rows, self.kv_heads, self.head_dim, self.tree
        n, groups = (inp.shape[0] - 4 - tree) // 3 if tree else inp.shape[0] - 1, self.heads // kv
        b = n // r  # the block (gpu_bench times other sizes than self.block)
        slots = inp[n] + self.arange[:b]  # where the rows' keys go
        positions = inp[n] + inp[n + 1 : n + 1 + b] if tree else slots  # a packed block's rows: their drafts'
        owner, shift = inp[n + 1 + b : n + 1 + 2 * b], inp[n + 1 + 2 * b : n + 1 + 2 * b + tree]
        if tree:  # the last step's kept draft first (its keys may be read below)
            move_kept(self.kv, inp[-3:], self.arange[: b - 1])
        if self.attention == "flash":
            used = (inp[n:] + b).to(torch.int32)  # keys [0, pos + block): bottom-right causal per query
        elif self.attention == "sdpa" or self.attention == "bmm":
            allowed = self.arange[:length][None, :] <= positions[:, None]  # [block, L]: causal by position
            mask = torch.zeros(allowed.shape, dtype=self.dtype, device=self.device)
            mask = mask.masked_fill_(~allowed, float("-inf")).repeat(groups, 1)[None, None]  # rows (group, slot)

        def attend(i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            self.k[i].index_copy_(2, slots, k.view(r, b, kv, d).transpose(1, 2))
            self.v[i].index_copy_(2, slots, v.view(r, b, kv, d).transpose(1, 2))
            if self.attention == "flash":  # one row (checked in __init__)
                k_all, v_all = self.k[i, 0].transpose(0, 1), self.v[i, 0].transpose(0, 1)
                return flash(q, k_all, v_all, used, self.scale, self._cu).reshape(b, -1)
            if self.attention == "split":
                return self._split_kernel(b)(q, self.k[i], self.v[i], inp[n:], inp[n + 1 : -3] if tree else None
                                             ).reshape(n, -1)
            if tree:
                return per_draft_attention(q, self.k[i, 0, :, :length], self.v[i, 0, :, :length], mask, shift,
                                           owner, inp[n], self.scale, groups)
            q = q.view(r, b, kv, groups, d).permute(0, 2, 3, 1, 4).reshape(r * kv, groups * b, d)
            keys, values = self.k[i, :, :, :length].flatten(0, 1), self.v[i, :, :, :length].flatten(0, 1)
            if self.attention == "bmm":
                scores = torch.baddbmm(mask[0], q, keys.transpose(1, 2), alpha=self.scale)
                out = torch.bmm(torch.softmax(scores, -1), values)
            else:
                out = F.scaled_dot_product_attention(q[None], keys[None], values[None], attn_mask=mask,
                                                     scale=self.scale)
            return out.view(r, kv, groups, b, d).permute(0, 3, 1, 2, 4).reshape(n, -1)

        at = positions.repeat(r) if r > 1 else positions  # each row's block covers the same positions
        x = self._layers(F.embedding(inp[:n], self.embed), self.cos[at][:, None], self.sin[at][:, None],
                         attend, step=True)
        logits = F.linear(x, self.lm_head)
        return logits, logits.argmax(-1)  # the argmax of the model's dtype: fp32's, as the cast is exact

    def _run(self, block_ids: list[int], pos: int, block: int, length: int,
             tree_info: Sequence[int] = ()) -> tuple[torch.Tensor, torch.Tensor]:
        """One step over `block_ids` (every row's block, rows * block ids) from `pos`; a packed block
        (tree) also gives its `tree_info` (llma.static.tree.PackedBlock.info). One upload a step."""
        values = [*block_ids, pos, *tree_info, *(self._move if self.tree else ())]
        self._move = NO_MOVE
        if not self.graphs:
            return self._step(upload(values, self.device), length)
        graph, static_inp, out = self._graph(block, length, pos)
        upload(values, self.device, into=static_inp)
        graph.replay()
        return out
