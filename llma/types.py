"""Dataclasses that cross module boundaries: drafts, per-step events, statistics, results."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Hashable

RefId = Hashable


@dataclass(frozen=True)
class Draft:
    """Tokens copied from a reference, with where they came from.

    `tokens` are `reference[ref_id][offset : offset + len(tokens)]`; `match_len` is the length of the
    n-gram (the output's suffix) that was found just before `offset` in that reference.
    """

    tokens: tuple[int, ...]
    ref_id: RefId
    offset: int
    match_len: int

    def __len__(self) -> int:
        return len(self.tokens)


@dataclass(frozen=True)
class CopiedSpan:
    """A run of accepted output tokens that were copied from a reference.

    Output positions count from the first generated token; reference positions index the reference's
    token list. `[out_start, out_end)` equals `[ref_start, ref_end)` of reference `ref_id`.
    """

    ref_id: RefId
    ref_start: int
    ref_end: int
    out_start: int
    out_end: int


@dataclass(frozen=True)
class StepEvent:
    """One decoding step: one forward pass (or the prefill, step 0) and what it added to the output.

    `new_tokens`: the output tokens it added (the accepted draft tokens, then the next token, up to
    a stop). `proposed`: the verified (kept) draft's length, 0 for none; `accepted`: how many of its
    tokens were kept; `span`: where those were copied from (None if none). `elapsed_s`: seconds
    since the generation started; `step_s`: since the previous event.
    """

    step: int
    new_tokens: tuple[int, ...]
    proposed: int
    accepted: int
    span: CopiedSpan | None
    elapsed_s: float
    step_s: float
    finished: bool = False
    stop_reason: str | None = None
    candidates: int = 0  # drafts verified side by side in this forward (the kept one is `proposed` long)
    batch: int = 1  # requests that shared this forward (the batch engine; 1 alone)
    draft_ref: RefId | None = None  # the reference the kept draft was copied from (None: no draft)
    reused: int = 0  # the first event: prompt tokens restored from stored chunks, not computed (llma.batch.prefix)


@dataclass
class DecodeStats:
    """Statistics of one generation; every figure is derived from the events."""

    forward_passes: int = 0
    tokens: int = 0
    proposed_tokens: int = 0
    accepted_tokens: int = 0
    drafts: int = 0
    accepted_hist: Counter[int] = field(default_factory=Counter)
    wall_s: float = 0.0
    ttft_s: float = 0.0
    batch_total: int = 0  # the events' batch sizes, summed
    reused_prompt_tokens: int = 0  # prompt tokens restored from stored chunks (the first event's)

    def add(self, event: StepEvent) -> None:
        self.forward_passes += 1
        self.batch_total += event.batch
        self.tokens += len(event.new_tokens)
        self.proposed_tokens += event.proposed
        self.accepted_tokens += event.accepted
        if event.proposed:
            self.drafts += 1
            self.accepted_hist[event.accepted] += 1
        if event.step == 0:
            self.ttft_s = event.elapsed_s
            self.reused_prompt_tokens = event.reused
        self.wall_s = event.elapsed_s

    @property
    def tokens_per_forward(self) -> float:
        """Generated tokens per forward pass, the prefill included (plain greedy gives 1.0)."""
        return self.tokens / self.forward_passes if self.forward_passes else 0.0

    @property
    def acceptance_rate(self) -> float:
        """Share of proposed (copied) tokens that the model accepted."""
        return self.accepted_tokens / self.proposed_tokens if self.proposed_tokens else 0.0

    @property
    def mean_batch(self) -> float:
        """Requests per forward pass this generation shared, on average (1.0 alone)."""
        return self.batch_total / self.forward_passes if self.forward_passes else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def copied_share(self) -> float:
        """Share of the output that was copied from a reference and accepted."""
        return self.accepted_tokens / self.tokens if self.tokens else 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "forward_passes": self.forward_passes,
            "tokens": self.tokens,
            "proposed_tokens": self.proposed_tokens,
            "accepted_tokens": self.accepted_tokens,
            "drafts": self.drafts,
            "tokens_per_forward": self.tokens_per_forward,
            "acceptance_rate": self.acceptance_rate,
            "copied_share": self.copied_share,
            "tokens_per_s": self.tokens_per_s,
            "accepted_hist": {str(k): v for k, v in sorted(self.accepted_hist.items())},
            "wall_s": self.wall_s,
            "ttft_s": self.ttft_s,
            "mean_batch": self.mean_batch,
            "reused_prompt_tokens": self.reused_prompt_tokens,
        }


@dataclass
class DecodeResult:
    """What a generation returns: the new token ids, the copied spans and the statistics."""

    tokens: list[int]
    spans: list[CopiedSpan]
    stats: DecodeStats
    stop_reason: str
