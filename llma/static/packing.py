"""Several drafts packed into the static backend's one query block, all after the same last token
(the root): the index arithmetic of a packed block (lists of ints; the backend uploads them) and the
two pieces of a packed step's tensor code. The layout and why each row gets the bits of a one-draft
step are in docs/DESIGN.md ("Packed drafts").
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


def draft_caps(block: int, drafts: int) -> tuple[int, ...]:
    """How long each of `drafts` drafts may be in a block of `block` rows: the later drafts share
    half the drafted slots evenly (the earlier ones get the remainder), the first gets the rest and
    whatever they leave unused. Non-increasing after the first; raises ValueError if a later
    draft would get no slot."""
    if drafts < 2:
        return (block - 1,)
    share, extra = divmod((block - 1) // 2, drafts - 1)
    if share == 0:
        raise ValueError(f"a block of {block} rows holds at most {(block - 1) // 2 + 1} drafts, got {drafts}")
    return (block - 1, *(share + (i < extra) for i in range(drafts - 1)))


@dataclass(frozen=True)
class PackedBlock:
    """One step's block: `ids` (block), per row its position after the root (`rel`) and its draft
    (`draft`), per draft the shift from a key's position to its slot (`shift`), and `index`
    [drafts][1 + len(draft)]: the block rows holding each draft's logits (the root's first)."""

    ids: list[int]
    rel: list[int]
    draft: list[int]
    shift: list[int]
    index: list[list[int]]

    def info(self) -> list[int]:
        """What the step reads after the ids and the position (SplitAttention's `tree_info`)."""
        return self.rel + self.draft + self.shift


def single(ids: Sequence[int], block: int, drafts: int) -> PackedBlock:
    """A block of consecutive tokens (a greedy step, one draft, a prompt chunk): one draft, no shift."""
    rel = list(range(block))
    return PackedBlock(list(ids) + [0] * (block - len(ids)), rel, [0] * block, [0] * drafts,
                       [rel[: len(ids)]])


def pack(rows: Sequence[Sequence[int]], block: int, drafts: int) -> PackedBlock:
    """Rows [last token, *draft] (the same last token) into one block; padding rows follow them."""
    root = rows[0][0] if rows and rows[0] else None
    used = 1 + sum(len(r) - 1 for r in rows)
    if not 1 <= len(rows) <= drafts or any(not r or r[0] != root for r in rows) or used > block:
        raise ValueError(f"a packed block takes 1 to {drafts} rows that start with the same token and "
                         f"hold at most {block} tokens together, got {[len(r) for r in rows]}")
    ids = [root]  # block rows: the root, then each draft's tokens in turn
    rel = [0]  # per row: its position after the root
    owner = [0]  # per row: its draft
    shift: list[int] = []  # per draft: from a key's position to its slot
    index: list[list[int]] = []  # per draft: the block rows of its logits
    for g, row in enumerate(rows):
        start = len(ids)  # the draft's first slot after the root: slot = position + start - 1
        shift.append(start - 1)
        index.append([0, *range(start, start + len(row) - 1)])
        ids += row[1:]
        rel += range(1, len(row))
        owner += [g] * (len(row) - 1)
    pad = block - len(ids)
    return PackedBlock(ids + [0] * pad, rel + list(range(len(rel), block)), owner + [0] * pad,
                       shift + [0] * (drafts - len(rows)), index)


def move_kept(kv: torch.Tensor, move: torch.Tensor, window: torch.Tensor) -> None:
    """Move the last step's kept draft into place, first thing in the next step (inside its graph:
    no launch of its own between steps): `move` = (shift, first slot, count) on the device; slots
    [first, first + count) of `kv` [..., slots, head_dim] take the entries `shift` slots further on.
    A fixed window of slots (the rest copied onto themselves) keeps the step's shape fixed."""
    slots = move[1] + window
    kv.index_copy_(-2, slots, kv.index_select(-2, slots + move[0] * (window < move[2])))


def per_draft_attention(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor,
                        shift: torch.Tensor, owner: torch.Tensor, pos: torch.Tensor, scale: float,
                        groups: int) -> torch.Tensor:
    """SDPA for a packed block, one attention per draft over the keys in its own order.

    q [block, heads, d]; keys, values [kv, L, d] in slot order; mask [block, L] by row position;
    shift [drafts]; owner [block]: each row's draft. Returns [block, heads * d]."""
    kv, length, d = keys.shape
    b = q.shape[0]
    at = torch.arange(length, device=keys.device)
    slots = (at[None] + (at[None] > pos) * shift[:, None]).clamp_(max=length - 1)  # [drafts, L]
    k_d, v_d = (t[:, slots].transpose(0, 1).flatten(0, 1) for t in (keys, values))  # [drafts * kv, L, d]
    n = shift.shape[0]
    qd = q.view(b, kv, groups, d).permute(1, 2, 0, 3).reshape(1, kv, groups * b, d).expand(n, -1, -1, -1)
    out = torch.nn.functional.scaled_dot_product_attention(
        qd.reshape(1, n * kv, groups * b, d), k_d[None], v_d[None], attn_mask=mask, scale=scale)
    out = out.view(n, kv, groups, b, d).permute(0, 3, 1, 2, 4)  # [drafts, block, kv, groups, d]
    return out[owner, torch.arange(b, device=q.device)].reshape(b, -1)
