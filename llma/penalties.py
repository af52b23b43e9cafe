"""Repetition, presence and frequency penalties on the logits, row by row as of each row's prefix.

Semantics (applied in this order, as Hugging Face `generate` orders its repetition penalty before a
custom processor, and vLLM too):
- `repetition` (Hugging Face's `repetition_penalty`, its RepetitionPenaltyLogitsProcessor): the
  logit of every token that occurs in the prompt or the output so far is divided by it where it is
  positive, multiplied by it where it is negative. 1.0 is off.
- `presence` and `frequency` (OpenAI's `presence_penalty` and `frequency_penalty`), over the
  generated tokens only: `logit - (frequency * count + presence * (count > 0))`, `count` the times
  the token occurs in the output so far. 0.0 is off.

A verifier scores several rows at once: row i of a draft is the model's prediction after the
prompt, the output so far and `draft[:i]`, so `TokenCounts.apply` penalises row i with the counts
as of that prefix, exactly as plain decoding would have at that position (llma.verifier's
`PenalisedVerifier` wires it in). Every operation is elementwise in fp32 on the given logits, so a
row's result does not depend on the rows beside it.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from llma.checks import check_finite


@dataclass(frozen=True)
class Penalties:
    """The three penalties; `active` is False when all are off (1.0, 0.0, 0.0)."""

    repetition: float = 1.0
    presence: float = 0.0
    frequency: float = 0.0

    def __post_init__(self) -> None:
        for name in ("repetition", "presence", "frequency"):
            check_finite(f"{name}_penalty", getattr(self, name))
        if not self.repetition > 0:
            raise ValueError(f"repetition_penalty must be > 0 (1.0 = off), got {self.repetition}")

    @property
    def active(self) -> bool:
        return self.repetition != 1.0 or self.presence != 0.0 or self.frequency != 0.0


class TokenCounts:
    """One generation's token counts, as the penalties read them: which tokens the prompt and the
    output hold (`repetition`), and how often the output holds each (`presence`, `frequency`).

    The tensors live on the logits' device and are made at the first `apply` (the vocabulary is the
    logits' width; ids past it, which the model cannot produce, are not counted, as in HF)."""

    def __init__(self, penalties: Penalties, prompt: Sequence[int]) -> None:
        self.penalties = penalties
        self.produced = 0  # output tokens counted so far
        self._pending_prompt = list(prompt)
        self._pending: list[int] = []  # output tokens not yet in the tensors
        self._seen: torch.Tensor | None = None  # [vocab] bool: in the prompt or the output
        self._counts: torch.Tensor | None = None  # [vocab] fp32: times in the output

    def extend(self, tokens: Sequence[int]) -> None:
        """The output grew by `tokens`."""
        self._pending.extend(tokens)
        self.produced += len(tokens)

    def apply(self, logits: torch.Tensor, drafts: Sequence[Sequence[int]]) -> torch.Tensor:
        """`logits` [drafts, rows, vocab] (or [rows, vocab] for one draft) penalised: row r of draft
        c as of the output so far plus `drafts[c][:r]`. A new fp32 tensor of the same shape."""
        one = logits.dim() == 2
        scores = (logits[None] if one else logits).float()  # [C, R, V]
        c, r, vocab = scores.shape
        seen, counts = self._flush(vocab, scores.device)  # [V], [V]
        # Draft tokens before each row: scatter a 1 at (draft, row after the token, token), then sum
        # along the rows. [C, R, V]
        later = torch.zeros_like(scores)
        where = [(ci, ri + 1, t) for ci, d in enumerate(drafts) for ri, t in enumerate(d[: r - 1]) if t < vocab]
        if where:
            index = torch.tensor(where, device=scores.device).T
            later.index_put_(tuple(index), torch.ones(index.shape[1], device=scores.device), accumulate=True)
            later = later.cumsum(1)
        p = self.penalties
        if p.repetition != 1.0:
            mask = seen | (later > 0)  # [C, R, V]
            penalised = torch.where(scores < 0, scores * p.repetition, scores / p.repetition)
            scores = torch.where(mask, penalised, scores)
        if p.presence != 0.0 or p.frequency != 0.0:
            total = counts + later  # [C, R, V]
            scores = scores - (p.frequency * total + p.presence * (total > 0).float())
        return scores[0] if one else scores

    def _flush(self, vocab: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The tensors, made on first use and brought up to date with the pending tokens."""
        if self._seen is None or self._counts is None:
            self._seen = torch.zeros(vocab, dtype=torch.bool, device=device)
            self._counts = torch.zeros(vocab, dtype=torch.float32, device=device)
            self._mark(self._pending_prompt, vocab)
            self._pending_prompt = []
        if self._pending:
            ids = self._mark(self._pending, vocab)
            self._counts.index_put_((ids,), torch.ones(len(ids), device=device), accumulate=True)
            self._pending = []
        return self._seen, self._counts

    def _mark(self, tokens: list[int], vocab: int) -> torch.Tensor:
        assert self._seen is not None
        ids = torch.tensor([t for t in tokens if t < vocab], dtype=torch.long, device=self._seen.device)
        self._seen[ids] = True
        return ids
