"""The repetition stop: ends an answer that has fallen into a loop. Pure Python, token ids only.

The rule (`RepetitionStop`): the output *ends in a loop* when its last `repeats * span` tokens are
`repeats` copies, back to back, of one `span`-token block, for some `span` in
[`min_span`, `max_span`]. A loop of a shorter period p also counts, once it fills `repeats` blocks
of the smallest multiple of p that is at least `min_span` (a token repeated 24 times is 3 copies
of 8 of it). With the defaults (3 copies of 8 to 128 tokens): a sentence written three times in a
row, or a cycle of two sentences written three times, stops the answer.

The decoder checks every output position in order, so the answer ends at the first token that
completes a loop — the same token whatever the number of tokens a step emits — and that token is
kept. It changes no token before the stop: LLMA and greedy stop at the same token.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from llma.checks import check_int


@dataclass(frozen=True)
class RepetitionStop:
    """A loop is `repeats` (>= 2) back-to-back copies of a block of `min_span` to `max_span`
    tokens at the end of the output."""

    min_span: int = 8
    max_span: int = 128
    repeats: int = 3

    def __post_init__(self) -> None:
        check_int("min_span", self.min_span, 1)
        check_int("max_span", self.max_span, self.min_span)
        check_int("repeats", self.repeats, 2)

    def detector(self) -> LoopDetector:
        """A fresh detector for one generation."""
        return LoopDetector(self)


def ends_in_loop(tokens: Sequence[int], rule: RepetitionStop) -> bool:
    """Whether `tokens` end in a loop as `rule` defines it (the definition, checked directly; pure)."""
    n = len(tokens)
    for span in range(rule.min_span, min(rule.max_span, n // rule.repeats) + 1):
        tail = tokens[n - span * rule.repeats :]
        block = tail[:span]
        if all(tail[i * span : (i + 1) * span] == block for i in range(1, rule.repeats)):
            return True
    return False


class LoopDetector:
    """`ends_in_loop` over a growing output, one token at a time.

    For each span s it keeps the run of latest positions t with `tokens[t] == tokens[t - s]`; the
    output ends in `repeats` copies of an s-block exactly when that run reaches (repeats - 1) * s.
    A push visits only the spans at which the new token occurred before (the earlier positions of
    that token within `max_span`); every other span's run is over, which `_ends` records implicitly.
    """

    def __init__(self, rule: RepetitionStop) -> None:
        self.rule = rule
        self.length = 0  # tokens pushed
        self._seen: dict[int, list[int]] = {}  # token -> its positions, in order
        self._runs: dict[int, int] = {}  # span -> length of its run of matches
        self._ends: dict[int, int] = {}  # span -> position of its run's last match

    def push(self, token: int) -> bool:
        """Adds the next output token; True if the output now ends in a loop."""
        rule, t = self.rule, self.length
        self.length += 1
        positions = self._seen.setdefault(token, [])
        found = False
        for j in reversed(positions):
            span = t - j
            if span > rule.max_span:
                break
            run = self._runs[span] + 1 if self._ends.get(span) == t - 1 else 1
            self._runs[span], self._ends[span] = run, t
            if span >= rule.min_span and run >= (rule.repeats - 1) * span:
                found = True
        positions.append(t)
        return found
