"""Load-adaptive drafting: how many rows each request may verify per step, from a cost model.

With few requests a step is cheap for its rows and every request verifies a full block of packed
drafts; as the batch grows, each row costs more and the per-request block shrinks, down to the
last token alone (greedy). The choice changes speed only, never output: a row's result does not
depend on the block it sits in (llma.batch.rows).
"""
from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# (rows per request, drafts packed into them): the last token alone, then blocks of packed drafts.
TIERS: tuple[tuple[int, int], ...] = ((1, 0), (2, 1), (4, 1), (8, 2), (16, 4), (32, 4))


@dataclass(frozen=True)
class Tier:
    """A step's per-request block: `rows` (the last token and drafts), `drafts` packed in them."""

    rows: int
    drafts: int

    @property
    def max_draft(self) -> int:
        return self.rows - 1


class CostModel:
    """Seconds a step takes for a total row count, interpolated between measured points."""

    def __init__(self, points: Sequence[tuple[int, float]]) -> None:
        if not points:
            raise ValueError("a cost model needs at least one measured point")
        self.points = sorted(points)

    @staticmethod
    def measure(run: Callable[[int], float], rows: Sequence[int] = (16, 32, 64, 128, 256, 512)) -> CostModel:
        """`run(r)`: the seconds of one step over r rows (the caller times it)."""
        return CostModel([(r, run(r)) for r in rows])

    def __call__(self, rows: int) -> float:
        xs = [r for r, _ in self.points]
        i = bisect.bisect_left(xs, rows)
        if i < len(xs) and xs[i] == rows:
            return self.points[i][1]
        if i == 0:
            return self.points[0][1]
        if i == len(xs):  # past the last point: linear in the rows from the last two
            (r0, t0), (r1, t1) = self.points[-2:] if len(self.points) > 1 else (self.points[-1],) * 2
            slope = (t1 - t0) / (r1 - r0) if r1 != r0 else t1 / r1
            return t1 + slope * (rows - r1)
        (r0, t0), (r1, t1) = self.points[i - 1], self.points[i]
        return t0 + (t1 - t0) * (rows - r0) / (r1 - r0)


class RowBudget:
    """Chooses the tier for `n` decoding requests: the one with the most expected tokens per second,
    n * E[tokens per step at the tier] / cost(n * rows).

    The expectation comes from the accepted lengths of recent steps (`observe`): a step that kept
    `a` drafted tokens would have kept min(a, rows - 1) in a smaller block; one that kept its whole
    draft, cut short by its block, counts as keeping a full block's (it might have). Until steps are
    seen it assumes `prior` accepted tokens per step. Of equally good tiers, the larger wins."""

    def __init__(self, cost: CostModel, tiers: Sequence[tuple[int, int]] = TIERS, window: int = 512,
                 prior: int = 4) -> None:
        self.cost = cost
        self.tiers = [Tier(r, d) for r, d in tiers]
        self.recent: deque[int] = deque([prior] * 16, maxlen=window)

    def observe(self, accepted: int, cut: bool = False) -> None:
        """A verified step kept `accepted` drafted tokens; `cut`: all of a draft its block cut short."""
        self.recent.append(self.tiers[-1].max_draft if cut else accepted)

    def expected(self, tier: Tier) -> float:
        """Tokens per step expected at `tier`: the next token plus the accepted ones it has room for."""
        cap = tier.max_draft
        return 1 + sum(min(a, cap) for a in self.recent) / len(self.recent)

    def tier(self, n: int, drafting: bool = True) -> Tier:
        """The tier for `n` >= 1 decoding requests (the greedy one when none is `drafting`)."""
        if not drafting:
            return self.tiers[0]
        return max(self.tiers, key=lambda t: (n * self.expected(t) / self.cost(n * t.rows), t.rows))
