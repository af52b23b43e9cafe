"""The proposer: drafts continuations of the output from its reference index (llma.reference_index).

Pure Python, token ids only (no torch): what the decoder loop talks to, with the copy-length rule.
"""
from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from llma.history import AnswerHistory, copy_start
from llma.reference_index import ReferenceIndex, fit_first
from llma.types import Draft, RefId


@dataclass
class CopyLength:
    """How many tokens to copy: fixed `k`, or adaptive within [k_min, k_max].

    Adaptive: `current` doubles after a fully accepted draft and halves after a rejection, starting
    at `k` and staying within [k_min, k_max]. Raises ValueError for k < 1 or, when adaptive,
    bounds that do not hold k.
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
        """After a draft of `proposed` tokens of which `accepted` were kept (no-op if fixed or 0)."""
        if not self.adaptive or proposed == 0:
            return
        if accepted == proposed:
            self._current = min(self.k_max, self._current * 2)
        else:
            self._current = max(self.k_min, self._current // 2)


class Proposer:
    """Drafts continuations from the references; what the decoder loop talks to.

    The decoder calls `prepare` during the prefill, `propose` or `propose_many` before each step,
    `feedback` after it with the accepted count, and `observe` with the step's new tokens."""

    def __init__(
        self, index: ReferenceIndex, copy: CopyLength | None = None, output_ref: RefId | None = None,
        history: AnswerHistory | None = None,
    ) -> None:
        """`copy`: the copy-length rule (default `CopyLength()`). `output_ref`: if set, every
        generated token is appended to that reference, so the answer can copy from itself.
        `history`: earlier answers (llma.history); where the index drafts fewer than a step takes,
        a draft from `copy_start` fills in, and this answer's tokens are added to it as they come."""
        self.index = index
        self.copy = copy or CopyLength()
        self.output_ref = output_ref
        self.history = history
        self._near: tuple[RefId, int] | None = None  # where the last accepted copy ended (`near`)
        self._last: int | None = None  # the last output token observed (the history's next pair)

    def propose(self, context: Sequence[int], budget: int, stop_tokens: Collection[int] = ()
                ) -> Draft | None:
        """A draft of at most min(current k, budget) tokens following `context`, or None when
        nothing matches or that limit is 0."""
        k = min(self.copy.current, budget)
        if k <= 0:
            return None
        draft = self.index.lookup(context, k, stop_tokens, self._near)
        if draft is None and self.history is not None:
            draft = copy_start(self.index, self.history, context, k, stop_tokens)
        return draft

    def propose_many(self, context: Sequence[int], budget: int, stop_tokens: Collection[int] = (),
                     count: int = 1, caps: Sequence[int] = ()) -> list[Draft]:
        """Up to `count` drafts of at most min(current k, budget) tokens each, to verify in one step
        (side by side, or packed into one block: `caps`, see `ReferenceIndex.lookup_many`), the
        first being `propose`'s; [] when nothing matches or that limit is 0."""
        k = min(self.copy.current, budget)
        if k <= 0:
            return []
        drafts = self.index.lookup_many(context, k, stop_tokens, count, caps, self._near)
        if self.history is not None and len(drafts) < count:
            limit = min(k, caps[len(drafts)]) if caps and drafts else k
            firsts = {d.tokens[0] for d in drafts}
            guess = copy_start(self.index, self.history, context, limit, stop_tokens, firsts)
            if guess is not None:
                drafts.append(guess)
                drafts = fit_first(drafts, caps[0]) if caps else drafts
        return drafts

    def prepare(self) -> None:
        """Build the reference index now (the decoder calls it while the prefill runs)."""
        self.index.build()

    def observe(self, new_tokens: Sequence[int]) -> None:
        """Take each step's new output tokens: into `output_ref` and the history, if set."""
        if self.output_ref is not None:
            self.index.extend(self.output_ref, new_tokens)
        if self.history is not None and new_tokens:
            self.history.add(new_tokens, self._last)
            self._last = new_tokens[-1]

    def feedback(self, draft: Draft, accepted: int) -> None:
        """After each verified draft, with how many of its tokens were kept: updates the copy length
        and, if any was kept, where the next lookup's `near` continues."""
        self.copy.update(len(draft.tokens), accepted)
        if accepted:
            self._near = (draft.ref_id, draft.offset + accepted)
