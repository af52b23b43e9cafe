"""The LLMA proposer: finds the output's suffix in the references and drafts what follows it.

Pure Python, token ids only (no torch). The index maps every n-gram (min_n <= n <= max_n) of every
reference to where it occurs, and is updated incrementally when a reference grows (the answer being
generated, the conversation so far), so a lookup costs O(max_n) per step whatever the output length:
no per-step rebuild, unlike the paper's reference code.
"""
from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from llma.types import Draft, RefId

log = logging.getLogger(__name__)

Policy = Literal["recent", "first", "longest"]
POLICIES: tuple[str, ...] = ("recent", "first", "longest")


@dataclass
class _Occurrences:
    """Where one n-gram occurs; `end` is the index just after it, i.e. where the copy starts.

    Keeping the first occurrence per reference and the latest overall (instead of every occurrence)
    answers all three policies in O(number of references) and keeps memory linear in the references.
    """

    first: dict[RefId, int] = field(default_factory=dict)
    last: tuple[RefId, int] = ("", 0)


class ReferenceIndex:
    """N-gram index over several references, each a list of token ids under an id (label).

    Policies when the matched suffix occurs several times:
    - "recent": the occurrence indexed last (latest reference added, latest position);
    - "first": the earliest occurrence in the earliest reference;
    - "longest": the occurrence with the most tokens after it (ties: earliest).
    """

    def __init__(
        self,
        references: Mapping[RefId, Sequence[int]] | None = None,
        *,
        min_n: int = 1,
        max_n: int = 4,
        policy: Policy = "recent",
    ) -> None:
        if min_n < 1 or max_n < min_n:
            raise ValueError(f"need 1 <= min_n <= max_n, got min_n={min_n}, max_n={max_n}")
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
        self.min_n, self.max_n, self.policy = min_n, max_n, policy
        self._refs: dict[RefId, list[int]] = {}
        self._rank: dict[RefId, int] = {}  # creation order: "earliest reference" for first/longest
        self._table: dict[tuple[int, ...], _Occurrences] = {}
        for ref_id, tokens in (references or {}).items():
            self.extend(ref_id, tokens)

    @property
    def references(self) -> Mapping[RefId, Sequence[int]]:
        return self._refs

    def extend(self, ref_id: RefId, tokens: Iterable[int]) -> None:
        """Append tokens to reference `ref_id` (created if new), indexing only the new n-grams."""
        if ref_id not in self._refs:
            self._rank[ref_id] = len(self._refs)
        ref = self._refs.setdefault(ref_id, [])
        for token in tokens:
            if not isinstance(token, int) or isinstance(token, bool):
                raise ValueError(f"reference {ref_id!r}: token ids must be ints, got {token!r}")
            ref.append(token)
            self._index_ngrams_before(ref_id, ref, len(ref) - 1)

    def _index_ngrams_before(self, ref_id: RefId, ref: list[int], end: int) -> None:
        # Index the n-grams that end just before `end` only once `ref[end]` exists, so every indexed
        # occurrence has at least one token to copy (a growing reference never matches itself emptily).
        for n in range(self.min_n, min(self.max_n, end) + 1):
            occ = self._table.setdefault(tuple(ref[end - n : end]), _Occurrences())
            occ.first.setdefault(ref_id, end)
            occ.last = (ref_id, end)

    def lookup(self, context: Sequence[int], k: int, stop_tokens: Collection[int] = ()) -> Draft | None:
        """Draft up to `k` tokens following the longest suffix of `context` found in a reference.

        The draft ends after the first stop token in it (nothing after an EOS can be accepted).
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        for n in range(min(self.max_n, len(context)), self.min_n - 1, -1):
            occ = self._table.get(tuple(context[len(context) - n :]))
            if occ is None:
                continue
            ref_id, start = self._choose(occ, k)
            tokens = self._refs[ref_id][start : start + k]
            cut = next((i + 1 for i, t in enumerate(tokens) if t in stop_tokens), len(tokens))
            return Draft(tokens=tuple(tokens[:cut]), ref_id=ref_id, offset=start, match_len=n)
        return None

    def _choose(self, occ: _Occurrences, k: int) -> tuple[RefId, int]:
        if self.policy == "recent":
            return occ.last
        # `occ.first` is ordered by when each reference first held the n-gram, not by reference
        # order, so ties go by creation rank (the same answer as an index built all at once).
        if self.policy == "first":
            return min(occ.first.items(), key=lambda item: self._rank[item[0]])
        # "longest": the first occurrence in each reference has that reference's longest tail.
        return min(occ.first.items(),
                   key=lambda item: (-min(k, len(self._refs[item[0]]) - item[1]), self._rank[item[0]]))


@dataclass
class CopyLength:
    """How many tokens to copy: fixed `k`, or adaptive within [k_min, k_max].

    Adaptive: double after a fully accepted draft (the reference is being followed closely), halve
    after a rejection (it diverged), so long verbatim copies take few steps and divergent matches
    waste little compute.
    """

    k: int = 8
    adaptive: bool = False
    k_min: int = 2
    k_max: int = 32

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"copy length k must be >= 1, got {self.k}")
        if self.adaptive and not 1 <= self.k_min <= self.k <= self.k_max:
            raise ValueError(f"adaptive copy length needs 1 <= k_min <= k <= k_max, got {self}")
        self._current = self.k

    @property
    def current(self) -> int:
        return self._current

    def update(self, proposed: int, accepted: int) -> None:
        if not self.adaptive or proposed == 0:
            return
        if accepted == proposed:
            self._current = min(self.k_max, self._current * 2)
        else:
            self._current = max(self.k_min, self._current // 2)


class Proposer:
    """Drafts continuations from the references; what the decoder loop talks to."""

    def __init__(
        self, index: ReferenceIndex, copy: CopyLength | None = None, output_ref: RefId | None = None
    ) -> None:
        """`output_ref`: if set, every generated token is appended to that reference, so the answer
        can copy from itself (repeated phrases, lists) as well as from the references."""
        self.index = index
        self.copy = copy or CopyLength()
        self.output_ref = output_ref

    def propose(self, context: Sequence[int], budget: int, stop_tokens: Collection[int] = ()) -> Draft | None:
        """A draft of at most min(current k, budget) tokens, or None when nothing matches."""
        k = min(self.copy.current, budget)
        return self.index.lookup(context, k, stop_tokens) if k > 0 else None

    def observe(self, new_tokens: Sequence[int]) -> None:
        """Called by the decoder with each step's new output tokens."""
        if self.output_ref is not None:
            self.index.extend(self.output_ref, new_tokens)

    def feedback(self, proposed: int, accepted: int) -> None:
        self.copy.update(proposed, accepted)
