"""The static backend's KV cache: preallocated, written by position, rolled back by moving its length."""
from __future__ import annotations

import torch

NO_MOVE = (0, 0, 0)  # (shift, first slot, count): the keys a step moves before its own (none)


class KVCache:
    """Keys and values of one sequence, in `copies` copies (one per block verified side by side).

    `kv` [2, layers, copies, kv_heads, capacity, head_dim] holds keys (`k` = kv[0]) and values
    (`v` = kv[1]) in one tensor, so a copy between slots moves both at once.

    Invariants: the sequence is slots [0, length) of every copy; entries at or past `length` are
    stale or padding and are never read (a query sees only keys at positions up to its own), so
    `trim` only moves `length`. `start` is the length before the last multi-draft step (None when
    no `keep` is due); `move` is a kept packed draft's (shift, first slot, count), which the next
    step's graph applies before its own keys are written (`take_move`).
    """

    def __init__(self, layers: int, copies: int, kv_heads: int, capacity: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device) -> None:
        shape = (2, layers, copies, kv_heads, capacity, head_dim)
        self.kv = torch.zeros(shape, dtype=dtype, device=device)
        self.k = self.kv[0]
        self.v = self.kv[1]
        self.copies = copies
        self.capacity = capacity
        self.length = 0
        self.start: int | None = None
        self.move = NO_MOVE

    def write(self, layer: int, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """A step's keys and values: k, v [copies * block, kv_heads, head_dim], copy c's block at
        `slots` [block] of copy c (gpt-fast's `KVCache.update`, by slot)."""
        block = slots.shape[0]
        heads = k.shape[1]
        self.k[layer].index_copy_(2, slots, k.view(self.copies, block, heads, -1).transpose(1, 2))
        self.v[layer].index_copy_(2, slots, v.view(self.copies, block, heads, -1).transpose(1, 2))

    def write_prompt(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """A prompt's keys and values [kv_heads, n, head_dim] at slots [0, n) of the first copy."""
        n = k.shape[1]
        self.k[layer, 0, :, :n] = k
        self.v[layer, 0, :, :n] = v

    def spread_prompt(self, n: int) -> None:
        """Every copy starts from the first copy's slots [0, n) (after a prefill)."""
        if self.copies > 1:
            self.kv[:, :, 1:, :, :n] = self.kv[:, :, :1, :, :n]

    def start_sequence(self, n: int) -> None:
        """A new sequence of `n` tokens (its prompt written): nothing pending."""
        self.length = n
        self.start = None
        self.move = NO_MOVE

    def append(self, n: int, several: bool = False) -> None:
        """`n` more tokens written after the sequence; `several`: a multi-draft step, `keep` due."""
        if several:
            self.start = self.length
        self.length += n

    def trim(self, length: int) -> None:
        """Keep the first `length` tokens: only the length moves (nothing is copied or cleared)."""
        if not 0 <= length <= self.length:
            raise ValueError(f"cannot trim a cache of {self.length} tokens to {length}")
        self.length = length
        self.start = None

    def check_keep(self, length: int) -> int:
        """The start of the last multi-draft step, `length` checked to lie after it."""
        if self.start is None or not self.start < length <= self.length:
            raise ValueError(f"keep needs a forward_rows before it and a length in "
                             f"({self.start}, {self.length}], got {length}")
        return self.start

    def keep_copy(self, copy: int, length: int) -> None:
        """After a step over several copies: copy `copy`'s new entries up to `length` overwrite the
        others' (cloned first: source and target overlap), and the sequence ends at `length`."""
        start = self.check_keep(length)
        s = slice(start, length)
        self.kv[:, :, :, :, s] = self.kv[:, :, copy : copy + 1, :, s].clone()
        self.length = length
        self.start = None

    def keep_packed(self, shift: int, length: int) -> None:
        """After a packed step: the kept draft's keys, `shift` slots past where the sequence goes on,
        move into place first thing in the next step (`take_move`); the sequence ends at `length`."""
        start = self.check_keep(length)
        n = length - start - 1  # the kept draft's tokens after the root (draft 0's are in place)
        self.move = (shift, start + 1, n) if n > 0 and shift > 0 else NO_MOVE
        self.length = length
        self.start = None

    def take_move(self) -> tuple[int, int, int]:
        """The pending move, for the next step's input; none is pending after."""
        move = self.move
        self.move = NO_MOVE
        return move
