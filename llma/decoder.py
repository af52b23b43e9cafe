"""The decoder loop: prefill -> propose -> one forward over [last token + draft] -> accept -> trim.

Token ids in, token ids out; one `StepEvent` per forward pass. With no proposer it is plain greedy
(or plain sampling) decoding through the very same code, which is the baseline for every figure.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

from llma.backend import Backend
from llma.proposer import Proposer
from llma.sequence import DecodeState, StopConfig
from llma.types import CopiedSpan, DecodeResult, DecodeStats, Draft, StepEvent
from llma.verifier import Verdict, Verifier

log = logging.getLogger(__name__)


class Decoder:
    """Runs generations on one backend; `stream` yields events, `generate` collects a result."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def stream(
        self,
        prompt: Sequence[int],
        *,
        proposer: Proposer | None = None,
        verifier: Verifier | None = None,
        stop: StopConfig = StopConfig(),
    ) -> Iterator[StepEvent]:
        backend = self.backend
        state = DecodeState(prompt, backend.context_length, proposer, verifier, stop)
        logits = backend.prefill(prompt)  # on a GPU: queued, the host goes on at once
        if proposer is not None:
            proposer.prepare()  # e.g. its reference index, built while the GPU prefills
        event = state.start(state.verifier.verify(logits, (), 0))
        count = self._candidates(state.rows_rule)
        caps = backend.draft_caps if count > 1 else ()
        while True:
            yield event
            if event.finished:
                return
            drafts = state.propose(count, caps, backend.max_draft)
            event = state.advance(drafts, self._verify(state, drafts))

    def _candidates(self, rows_rule: bool) -> int:
        """Drafts to verify per step: as many as the backend takes, if the verifier can choose among
        them (`rows_rule`: a RowsVerifier, deterministic rules only)."""
        most = self.backend.drafts_per_step
        return most if most > 1 and rows_rule else 1

    def _verify(self, state: DecodeState, drafts: list[Draft]) -> Verdict:
        """One forward over [last token + draft] (one row per draft where there are several), the
        verdict, and the cache cut back to the accepted tokens. A rows rule reads the backend's
        `forward_argmax` (the model's argmax alone), any other rule one draft's logits."""
        rows = state.rows(drafts)
        cached = len(state.sequence)  # with the last token, which this forward caches
        if state.rows_rule:
            verdict = state.verdict(drafts, self.backend.forward_argmax(rows).rows, None)
        else:
            verdict = state.verdict(drafts, None, lambda: self.backend.forward(rows[0]))
        if len(rows) > 1:
            self.backend.keep(verdict.draft, cached + verdict.accepted)
        else:
            self.backend.trim(cached + verdict.accepted)
        return verdict

    def generate(self, prompt: Sequence[int], *, proposer: Proposer | None = None,
                 verifier: Verifier | None = None, stop: StopConfig = StopConfig()) -> DecodeResult:
        """`stream`'s events folded into one result."""
        return collect(self.stream(prompt, proposer=proposer, verifier=verifier, stop=stop))


def collect(events: Iterator[StepEvent]) -> DecodeResult:
    """Fold a stream of events into the result (tokens, copied spans, statistics)."""
    tokens: list[int] = []
    spans: list[CopiedSpan] = []
    stats = DecodeStats()
    reason = "max_new_tokens"
    for event in events:
        tokens.extend(event.new_tokens)
        if event.span is not None:
            spans.append(event.span)
        stats.add(event)
        reason = event.stop_reason or reason
    return DecodeResult(tokens=tokens, spans=spans, stats=stats, stop_reason=reason)
