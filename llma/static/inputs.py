"""A static step's inputs: one flat int tensor on the device (one upload a step, a CUDA graph's
static input), read through named views."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from llma.static.cache import NO_MOVE


@dataclass(frozen=True)
class StepInputs:
    """Named views of a step's flat input (no copies: a captured graph reads the same storage).

    ids:   [copies * block]  token ids, each cache copy's block in turn (padding: 0)
    pos:   [1]               the block's first position (the cached length)
    info:  [2 * block + packed] rel, owner and shift together (split attention reads them so);
           None without packed drafts, as are the four below
    rel:   [block]           each row's position after the block's first (its draft's own order)
    owner: [block]           each row's draft
    shift: [packed]          per draft, from a key's position after `pos` to its slot
    move:  [3]               the last step's kept draft (shift, first slot, count), moved first
    """

    ids: torch.Tensor
    pos: torch.Tensor
    info: torch.Tensor | None
    rel: torch.Tensor | None
    owner: torch.Tensor | None
    shift: torch.Tensor | None
    move: torch.Tensor | None


@dataclass(frozen=True)
class StepLayout:
    """Where each input sits in the flat tensor of a step over `copies` blocks of `block` rows with
    up to `packed` drafts packed per block (0: none)."""

    block: int
    copies: int = 1
    packed: int = 0

    @property
    def size(self) -> int:
        """The flat tensor's length."""
        ids = self.copies * self.block
        return ids + 1 + (2 * self.block + self.packed + len(NO_MOVE) if self.packed else 0)

    def flat(self, ids: Sequence[int], pos: int, info: Sequence[int] = (),
             move: Sequence[int] = NO_MOVE) -> list[int]:
        """The values in order; `info`: a packed block's rel + owner + shift (PackedBlock.info)."""
        if not self.packed:
            return [*ids, pos]
        return [*ids, pos, *info, *move]

    def split(self, flat: torch.Tensor) -> StepInputs:
        """Views of `flat` [size]."""
        n = self.copies * self.block
        pos = flat[n : n + 1]
        if not self.packed:
            return StepInputs(flat[:n], pos, None, None, None, None, None)
        b = self.block
        info = flat[n + 1 : n + 1 + 2 * b + self.packed]
        rel = info[:b]
        owner = info[b : 2 * b]
        shift = info[2 * b :]
        return StepInputs(flat[:n], pos, info, rel, owner, shift, flat[-len(NO_MOVE) :])
