"""Load-adaptive drafting: how many rows each request may verify per step, from a cost model.

With few requests a step is cheap for its rows and every request verifies a full block of packed
drafts; as the batch grows, each row costs more and the per-request block shrinks, down to the
last token alone (greedy). The choice changes speed only, never output: a row's result does not
depend on the block it sits in (llma.batch.rows).
"""
from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

# (rows per request, drafts packed into them): the last token alone, then blocks of packed drafts.
TIERS: tuple[tuple[int, int], ...] = ((1, 0), (2, 1), (4, 1), (8, 2), (16, 4), (32, 4))
MARGIN = 0.05  # what drafting must promise over greedy's tokens per second to be chosen


@dataclass(frozen=True)
class Tier:
    """A step's per-request block: `rows` (the last token and drafts), `drafts` packed in them."""

    rows: int
    drafts: int

    @property
    def max_draft(self) -> int:
        return self.rows - 1


def _interpolate(points: Sequence[tuple[int, float]], x: int) -> float:
    """The value at `x` of the sorted (x, y) `points`: linear between them, the first's before the
    first, extended linearly from the last two past the last."""
    xs = [r for r, _ in points]
    i = bisect.bisect_left(xs, x)
    if i < len(xs) and xs[i] == x:
        return points[i][1]
    if i == 0:
        return points[0][1]
    if i == len(xs):
        (r0, t0), (r1, t1) = points[-2:] if len(points) > 1 else (points[-1],) * 2
        slope = (t1 - t0) / (r1 - r0) if r1 != r0 else t1 / r1
        return t1 + slope * (x - r1)
    (r0, t0), (r1, t1) = points[i - 1], points[i]
    return t0 + (t1 - t0) * (x - r0) / (r1 - r0)


class CostModel:
    """Seconds a step takes: by its total row count (`points`, (rows, s)), or, where measured, by
    its shape (`shapes`: per rows-per-request, (requests, s) points), interpolated between points."""

    def __init__(self, points: Sequence[tuple[int, float]] = (),
                 shapes: Mapping[int, Sequence[tuple[int, float]]] | None = None) -> None:
        self.points = sorted(points)
        self.shapes = {rows: sorted(curve) for rows, curve in (shapes or {}).items() if curve}
        if not self.points and not self.shapes:
            raise ValueError("a cost model needs at least one measured point")

    @staticmethod
    def measure(run: Callable[[int], float], rows: Sequence[int] = (16, 32, 64, 128, 256, 512)) -> CostModel:
        """`run(r)`: the seconds of one step over r rows (the caller times it)."""
        return CostModel([(r, run(r)) for r in rows])

    @staticmethod
    def measure_shapes(run: Callable[[int, int], float], blocks: Sequence[int], rows: Sequence[int]) -> CostModel:
        """`run(n, r)`: the seconds of one step of n requests' blocks of r rows (the caller times it)."""
        return CostModel(shapes={r: [(n, run(n, r)) for n in blocks] for r in rows})

    def __call__(self, rows: int) -> float:
        """A step of `rows` rows in all (from `points`, else from the one-row shapes)."""
        return _interpolate(self.points or self.shapes[min(self.shapes)], rows)

    def step(self, requests: int, rows: int) -> float:
        """A step of `requests` blocks of `rows` rows each."""
        curve = self.shapes.get(rows)
        return _interpolate(curve, requests) if curve else self(requests * rows)


class RowBudget:
    """Chooses the tier for `n` decoding requests: the one with the most expected tokens per second,
    n * E[tokens per step at the tier] / cost.step(n, rows).

    The expectation comes from the accepted lengths of recent steps (`observe`): a step that kept
    `a` drafted tokens would have kept min(a, rows - 1) in a smaller block; one that kept its whole
    draft, cut short by its block, counts as keeping a full block's (it might have). Until steps are
    seen it assumes `prior` accepted tokens per step. Of equally good tiers, the larger wins; but a
    tier with drafts must promise more than `margin` (a fraction) over greedy's tokens per second,
    so that the model's errors (a cost or an acceptance rate a little off) cost no speed where
    drafting would gain little.

    A step's time is the device's (`cost`) plus the host's: per request, a moving average of the
    host's work (plans, verdicts, events) in recent steps with drafts and in those without
    (`observe_host`), n times that; with `overlap` (`tier`'s: the host's work for one group runs
    while the other's step runs) the larger of the two instead of their sum."""

    def __init__(self, cost: CostModel, tiers: Sequence[tuple[int, int]] = TIERS, window: int = 512,
                 prior: int = 4, margin: float = MARGIN) -> None:
        self.cost = cost
        self.margin = margin
        self.tiers = [Tier(r, d) for r, d in tiers]
        self.recent: deque[int] = deque(maxlen=window)
        self._counts = [0] * (self.tiers[-1].max_draft + 1)  # how many of `recent` kept each length
        for _ in range(16):
            self._push(min(prior, self.tiers[-1].max_draft))
        self.host = {False: 0.0, True: 0.0}  # seconds per request-step, without and with drafts

    def observe_host(self, seconds: float, drafting: bool, weight: float = 0.05) -> None:
        """A step's host work per request, `drafting` or not, into its moving average."""
        old = self.host[drafting]
        self.host[drafting] = seconds if old == 0.0 else old + weight * (seconds - old)

    def step_time(self, n: int, tier: Tier, overlap: bool = False) -> float:
        """Seconds expected for a step of `n` requests at `tier`: device and host (see the class)."""
        device, host = self.cost.step(n, tier.rows), n * self.host[tier.drafts > 0]
        return max(device, host) if overlap else device + host

    def _push(self, accepted: int) -> None:
        if len(self.recent) == self.recent.maxlen:
            self._counts[self.recent[0]] -= 1
        self.recent.append(accepted)
        self._counts[accepted] += 1

    def observe(self, accepted: int, cut: bool = False) -> None:
        """A verified step kept `accepted` drafted tokens; `cut`: all of a draft its block cut short."""
        longest = self.tiers[-1].max_draft
        self._push(longest if cut else min(accepted, longest))

    def expected(self, tier: Tier) -> float:
        """Tokens per step expected at `tier`: the next token plus the accepted ones it has room for."""
        cap = tier.max_draft
        return 1 + sum(min(a, cap) * n for a, n in enumerate(self._counts) if n) / len(self.recent)

    def tier(self, n: int, drafting: bool = True, overlap: bool = False) -> Tier:
        """The tier for `n` >= 1 decoding requests (the greedy one when none is `drafting`);
        `overlap`: the step runs beside the host's work for another group."""
        greedy = self.tiers[0]
        if not drafting:
            return greedy
        rates = [(n * self.expected(t) / self.step_time(n, t, overlap), t) for t in self.tiers]  # tokens / s
        best_rate, best = max(rates, key=lambda item: (item[0], item[1].rows))
        return best if best_rate > (1 + self.margin) * rates[0][0] else greedy
