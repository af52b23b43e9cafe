"""Verifiers: given the model's logits over [last token + draft], decide what the step outputs.

The vocabulary, used everywhere in llma/:
- draft: tokens proposed for the positions after the last token (copied from a reference);
- accepted: the draft's longest prefix that the rule keeps (greedy: equal to the model's argmax);
- next token: the model's own token right after the accepted tokens, which every step emits (a
  replacement for the first rejected draft token, or one more token after a fully accepted draft);
- verdict: (draft, accepted, next token), `draft` the index of the kept one among those verified.

`verify` returns `(accepted, next_token)`; the rows rules return a `Verdict`. Row `i` of the logits
is the model's prediction after the last token and `draft[:i]`.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol, runtime_checkable

import torch

from llma.penalties import TokenCounts

class Verdict(NamedTuple):
    """What one step keeps: the draft (its index among those verified), how many of its tokens are
    accepted, and the next token."""

    draft: int
    accepted: int
    next_token: int


def count_accepted(draft: Sequence[int], targets: Sequence[int]) -> int:
    """Length of the longest prefix of `draft` that equals `targets` (pure; no torch)."""
    n = 0
    for d, t in zip(draft, targets):
        if d != t:
            break
        n += 1
    return n


def best_row(accepted: Sequence[int]) -> int:
    """The candidate that keeps the most drafted tokens; the first of equals (pure)."""
    return max(range(len(accepted)), key=accepted.__getitem__)


class Verifier(Protocol):
    def verify(self, logits: torch.Tensor, draft: Sequence[int], position: int) -> tuple[int, int]:
        """`logits`: [len(draft) + 1, vocab]; `position`: output index of the first row's token."""
        ...


@runtime_checkable
class RowsVerifier(Verifier, Protocol):
    """A verifier that can choose among several drafts verified side by side. Only a deterministic
    rule can: keeping the best of several sampled checks would bias sampling. `reads_logits`: it
    must see the logits (`verify_rows`), never the argmax alone (`verify_targets`)."""

    reads_logits: bool

    def verify_rows(self, logits: torch.Tensor, drafts: Sequence[Sequence[int]],
                    position: int) -> Verdict:
        """`logits`: [len(drafts), rows, vocab], row r of draft c after `drafts[c][:r]`."""
        ...

    def verify_targets(self, targets: Callable[[], list[list[int]]], drafts: Sequence[Sequence[int]],
                       position: int) -> Verdict:
        """The same from the model's argmax alone: `targets()` gives [draft][row] (a device read,
        made only if the rule needs the model's tokens)."""
        ...


class GreedyVerifier:
    """Greedy decoding: keep the drafted tokens that equal the argmax, then the argmax after them.

    The output is exactly what plain greedy decoding gives, as long as the logits of a multi-token
    forward equal those of one-token forwards (true up to floating-point rounding of the kernels).
    """

    reads_logits = False

    def verify(self, logits: torch.Tensor, draft: Sequence[int], position: int) -> tuple[int, int]:
        targets = logits.argmax(dim=-1).tolist()
        accepted = count_accepted(draft, targets)
        return accepted, targets[accepted]

    def verify_rows(self, logits: torch.Tensor, drafts: Sequence[Sequence[int]],
                    position: int) -> Verdict:
        return self.verify_targets(lambda: logits.argmax(dim=-1).tolist(), drafts, position)  # one transfer

    def verify_targets(self, targets: Callable[[], list[list[int]]], drafts: Sequence[Sequence[int]],
                       position: int) -> Verdict:
        rows = targets()
        accepted = [count_accepted(d, t) for d, t in zip(drafts, rows)]
        best = best_row(accepted)
        return Verdict(best, accepted[best], rows[best][accepted[best]])


@dataclass
class ForcedVerifier:
    """Forced decoding, the paper's set-up for a model that would produce `target`: accept by the target.

    The model still runs every forward pass (so timing is real), but what counts as the model's token
    at output position i is `target[i]`.
    """

    target: Sequence[int]
    reads_logits = False

    def verify(self, logits: torch.Tensor, draft: Sequence[int], position: int) -> tuple[int, int]:
        return self._forced(draft, position)  # the logits are not read

    def _forced(self, draft: Sequence[int], position: int) -> tuple[int, int]:
        wanted = self.target[position : position + len(draft) + 1]
        if not wanted:
            raise ValueError(f"forced decoding ran past the end of its {len(self.target)}-token target")
        accepted = count_accepted(draft, wanted)
        if accepted == len(wanted):  # the target ends inside the draft
            return accepted - 1, wanted[-1]
        return accepted, wanted[accepted]

    def verify_rows(self, logits: torch.Tensor, drafts: Sequence[Sequence[int]],
                    position: int) -> Verdict:
        return self.verify_targets(list, drafts, position)

    def verify_targets(self, targets: Callable[[], list[list[int]]], drafts: Sequence[Sequence[int]],
                       position: int) -> Verdict:
        results = [self._forced(d, position) for d in drafts]  # `targets` is never read: no device wait
        best = best_row([accepted for accepted, _ in results])
        return Verdict(best, *results[best])


@dataclass(frozen=True)
class SamplingConfig:
    """Warping applied to the logits before sampling; temperature 0 is rejected (use greedy)."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0 for sampling, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        """Warped probabilities, row by row (temperature, then top-k, then top-p, like HF)."""
        scores = logits.float() / self.temperature
        if self.top_k:
            kth = torch.topk(scores, min(self.top_k, scores.shape[-1]), dim=-1).values[..., -1:]
            scores = scores.masked_fill(scores < kth, float("-inf"))
        if self.top_p < 1:
            sorted_scores, order = torch.sort(scores, descending=True, dim=-1)
            cum = sorted_scores.softmax(-1).cumsum(-1)
            # Drop a token once the mass before it already reaches top_p; the top token always stays.
            drop_sorted = (cum - sorted_scores.softmax(-1)) >= self.top_p
            drop = drop_sorted.scatter(-1, order, drop_sorted)
            scores = scores.masked_fill(drop, float("-inf"))
        return scores.softmax(-1)


class SamplingVerifier:
    """Lossless speculative sampling for a draft that is deterministic (a copied span).

    Proof. Let p be the warped target distribution at a position and x the drafted token; the draft
    distribution q is a point mass on x. Speculative sampling accepts x with probability
    min(1, p(x)/q(x)) = p(x), and on rejection samples from the residual max(0, p - q), normalised;
    since q = 1 at x and 0 elsewhere, that residual is p with x removed, renormalised by 1 - p(x).
    The emitted token y is then distributed as: P(y = x) = p(x); for y != x,
    P(y) = (1 - p(x)) * p(y) / (1 - p(x)) = p(y). So each emitted token has exactly the law p given
    the tokens before it, which is plain sampling. After a rejection the rest of the draft is
    discarded (it was conditioned on x); after accepting all drafted tokens, one more token is
    sampled from the last row, which is the distribution after the full draft. By induction over
    positions the whole output has the law of plain sampling.
    """

    def __init__(self, config: SamplingConfig, generator: torch.Generator | None = None) -> None:
        self.config = config
        self.generator = generator

    def verify(self, logits: torch.Tensor, draft: Sequence[int], position: int) -> tuple[int, int]:
        probs = self.config.probs(logits)
        for i, x in enumerate(draft):
            p_x = probs[i, x].item()
            if torch.rand((), generator=self.generator).item() < p_x:
                continue
            residual = probs[i].clone()
            residual[x] = 0.0
            return i, self._sample(residual)
        return len(draft), self._sample(probs[len(draft)])

    def _sample(self, weights: torch.Tensor) -> int:
        return int(torch.multinomial(weights, 1, generator=self.generator).item())


class PenalisedVerifier:
    """A rule (`rule`) that sees the logits penalised (llma.penalties): row i of a draft with the
    counts as of the prompt, the output so far and `draft[:i]`, as plain decoding would at that
    position. It follows the output from its own verdicts (each step emits the accepted tokens and
    the next token), so one instance serves one generation; `penalised` makes one."""

    def __init__(self, rule: Verifier, counts: TokenCounts) -> None:
        self.rule = rule
        self.counts = counts

    def verify(self, logits: torch.Tensor, draft: Sequence[int], position: int) -> tuple[int, int]:
        self._check(position)
        accepted, token = self.rule.verify(self.counts.apply(logits, [draft]), draft, position)
        self.counts.extend([*draft[:accepted], token])
        return accepted, token

    def _check(self, position: int) -> None:
        if position != self.counts.produced:
            raise RuntimeError(f"a PenalisedVerifier serves one generation: asked for output position "
                               f"{position} after {self.counts.produced} tokens")


class PenalisedRowsVerifier(PenalisedVerifier):
    """`PenalisedVerifier` of a RowsVerifier: it chooses among several drafts, from their logits."""

    reads_logits = True

    def __init__(self, rule: RowsVerifier, counts: TokenCounts) -> None:
        super().__init__(rule, counts)
        self.rows_rule = rule

    def verify_rows(self, logits: torch.Tensor, drafts: Sequence[Sequence[int]],
                    position: int) -> Verdict:
        self._check(position)
        verdict = self.rows_rule.verify_rows(self.counts.apply(logits, drafts), drafts, position)
        self.counts.extend([*drafts[verdict.draft][: verdict.accepted], verdict.next_token])
        return verdict

    def verify_targets(self, targets: Callable[[], list[list[int]]], drafts: Sequence[Sequence[int]],
                       position: int) -> Verdict:
        raise TypeError("penalties need the logits: verify_rows, not verify_targets (reads_logits)")


def penalised(rule: Verifier, counts: TokenCounts) -> PenalisedVerifier:
    """`rule` with penalties; it still chooses among several drafts if `rule` can."""
    if isinstance(rule, RowsVerifier):
        return PenalisedRowsVerifier(rule, counts)
    return PenalisedVerifier(rule, counts)
