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

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np
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
    """A verifier that can choose among several drafts verified side by side. Only a rule whose
    tokens no draft can change may (greedy; SamplingVerifier, keyed on the seed and position):
    keeping the best of several checks that each drew their own random numbers would bias
    sampling. `reads_logits`: it must see the logits (`verify_rows`), never the argmax alone
    (`verify_targets`)."""

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
        """Warped probabilities, row by row (temperature, then top-k, then top-p, like HF); ties in
        the top-p order are broken by token id (a stable sort), so equal rows give equal bits."""
        scores = logits.float() / self.temperature
        if self.top_k:
            kth = torch.topk(scores, min(self.top_k, scores.shape[-1]), dim=-1).values[..., -1:]
            scores = scores.masked_fill(scores < kth, float("-inf"))
        if self.top_p < 1:
            sorted_scores, order = torch.sort(scores, descending=True, stable=True, dim=-1)
            cum = sorted_scores.softmax(-1).cumsum(-1)
            # Drop a token once the mass before it already reaches top_p; the top token always stays.
            drop_sorted = (cum - sorted_scores.softmax(-1)) >= self.top_p
            drop = drop_sorted.scatter(-1, order, drop_sorted)
            scores = scores.masked_fill(drop, float("-inf"))
        return scores.softmax(-1)


class SamplingVerifier:
    """Seeded sampling that a draft cannot change: the token at output position t is drawn from a
    uniform u_t that depends on (seed, t) alone, and a drafted token is accepted iff it is the token
    that draw gives. `seed` None: a random one, drawn once here (one verifier serves one request).

    The draw. u_t = `uniform(seed, t)`, the first double of Philox4x64-10 keyed on the seed with its
    counter at t. The token is the inverse CDF of the warped probabilities p (`SamplingConfig.probs`
    of that row alone) at u_t, over token ids in order: with C_i = p(0) + ... + p(i) (float64),
    the smallest i with C_i > u_t * C_last (`inverse_cdf`).

    Proof that each token has exactly the warped law. Model (u_t) as independent uniforms on [0, 1)
    (a counter-based generator gives distinct counters outputs indistinguishable from that).
    Plain sampling with this seed emits y_t = F^-1(p_t, u_t), p_t the warped law of the row after
    the prompt and y_<t. The tokens y_<t are a function of u_<t alone, so u_t is independent of
    them and still uniform given them: P(y_t = i | y_<t) = P(C_(i-1) <= u_t C_last < C_i) =
    (C_i - C_(i-1)) / C_last = p_t(i); a token of probability 0 (C_i = C_(i-1)) is never drawn.
    By the chain rule the output has the joint law of plain sampling, each position drawn
    independently of the earlier draws given its prefix.

    Proof that drafts change no token. A step at output position s verifies [last token + draft
    d_0 .. d_(L-1)]; row i is the model's law after y_<s and d_<i. The verifier computes
    z_i = F^-1(row i, u_(s+i)) for i = 0, 1, ..., accepts d_i while z_i == d_i and emits z_a at the
    first mismatch a (or z_L after a fully accepted draft). By induction on i: if d_<i were accepted
    they equal y_s .. y_(s+i-1), so row i has plain sampling's prefix, its law is p_(s+i), and
    z_i = y_(s+i). So a step emits exactly plain sampling's tokens y_s .. y_(s+a): the output is the
    same function of the model's logits and the seed with or without drafts, whatever the drafts,
    alone or in a batch (the same caveat as greedy: a row's logits must not depend on the rows
    beside it, true bit for bit on the static backend and the batch engine, up to rounding on the
    generic HF loop). Rows after the first mismatch are never read.
    """

    def __init__(self, config: SamplingConfig, seed: int | None = None) -> None:
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")
        self.config = config
        self.seed = secrets.randbits(63) if seed is None else seed

    reads_logits = True

    def verify(self, logits: torch.Tensor, draft: Sequence[int], position: int) -> tuple[int, int]:
        for i, drafted in enumerate(draft):
            token = self.token(logits[i], position + i)
            if token != drafted:
                return i, token
        return len(draft), self.token(logits[len(draft)], position + len(draft))

    def verify_rows(self, logits: torch.Tensor, drafts: Sequence[Sequence[int]],
                    position: int) -> Verdict:
        """Every draft's accepted tokens are a prefix of the same sample, so keeping the draft with
        the most (`best_row`) changes no token: choosing among drafts biases nothing here."""
        verdicts = [self.verify(logits[c], d, position) for c, d in enumerate(drafts)]
        best = best_row([accepted for accepted, _ in verdicts])
        return Verdict(best, *verdicts[best])

    def verify_targets(self, targets: Callable[[], list[list[int]]], drafts: Sequence[Sequence[int]],
                       position: int) -> Verdict:
        raise TypeError("sampling needs the logits: verify_rows, not verify_targets (reads_logits)")

    def token(self, row: torch.Tensor, position: int) -> int:
        """The token at output `position` whose logits are `row` [vocab]."""
        return inverse_cdf(self.config.probs(row[None])[0], uniform(self.seed, position))


def uniform(seed: int, position: int) -> float:
    """u in [0, 1) for (seed, position): Philox4x64-10 keyed on `seed`, its counter at `position`."""
    return float(np.random.Generator(np.random.Philox(key=seed, counter=position)).random())


def inverse_cdf(probs: torch.Tensor, u: float) -> int:
    """The smallest token id i with p(0) + ... + p(i) > u * (total), `probs` [vocab] >= 0, u in [0, 1):
    token i is drawn with probability p(i) / total; a token of probability 0 never."""
    cdf = probs.double().cumsum(0)
    index = int(torch.searchsorted(cdf, cdf.new_tensor([u]) * cdf[-1], right=True)[0])
    top = int(torch.searchsorted(cdf, cdf[-1:])[0])  # the last token of probability > 0
    return min(index, top)  # index > top only where u * total rounds up to the total


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
