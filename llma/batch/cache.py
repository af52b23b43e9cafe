"""The batch engine's KV cache: one preallocated slot per running request, written by position."""
from __future__ import annotations

from collections.abc import Sequence

import torch

from llma.static.graphs import upload


class SlotCache:
    """Keys and values of up to `slots` sequences, each in its own slot of `capacity` positions.

    `kv` [2, layers, slots, kv_heads, capacity, head_dim] holds keys (`k` = kv[0]) and values
    (`v` = kv[1]). A slot is `acquire`d for a request and `release`d when it ends; what a slot held
    before is never read (a query sees only the keys at positions up to its own, all written by its
    own request), so nothing is cleared.
    """

    def __init__(self, layers: int, slots: int, kv_heads: int, capacity: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device) -> None:
        if slots < 1:
            raise ValueError(f"a slot cache needs at least one slot, got {slots}")
        self.kv = torch.zeros((2, layers, slots, kv_heads, capacity, head_dim), dtype=dtype, device=device)
        self.k = self.kv[0]
        self.v = self.kv[1]
        self.slots = slots
        self.capacity = capacity
        self._free = list(range(slots - 1, -1, -1))  # popped from the end: slot 0 first

    @property
    def free(self) -> int:
        """Slots not in use."""
        return len(self._free)

    def acquire(self) -> int:
        """A free slot (IndexError when none is)."""
        if not self._free:
            raise IndexError("every cache slot is in use")
        return self._free.pop()

    def release(self, slot: int) -> None:
        """`slot` free again (ValueError if it was not in use)."""
        if not 0 <= slot < self.slots or slot in self._free:
            raise ValueError(f"slot {slot} is not in use")
        self._free.append(slot)

    def write(self, layer: int, slots: torch.Tensor, positions: torch.Tensor, k: torch.Tensor,
              v: torch.Tensor) -> None:
        """Rows' keys and values k, v [rows, kv_heads, head_dim] at (`slots`, `positions`) [rows]."""
        self.k[layer][slots, :, positions] = k
        self.v[layer][slots, :, positions] = v

    def move(self, slot: int, source: int, target: int, count: int) -> None:
        """Entries [source, source + count) of `slot` copied to [target, target + count), every layer
        (a kept packed draft's keys into place)."""
        self.move_many([(slot, source, target, count)])

    def move_many(self, moves: Sequence[tuple[int, int, int, int]]) -> None:
        """Each (slot, source, target, count) of `moves` as `move`, all in one gather and one scatter
        (every source read before any target is written)."""
        slots, sources, targets = [], [], []
        for slot, source, target, count in moves:
            if count > 0 and source != target:
                slots += [slot] * count
                sources += range(source, source + count)
                targets += range(target, target + count)
        if slots:
            device = self.kv.device
            s, a, b = (upload(x, device) for x in (slots, sources, targets))
            self.kv[:, :, s, :, b] = self.kv[:, :, s, :, a]
