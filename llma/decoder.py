"""The decoder loop: prefill -> propose -> one forward over [last token + draft] -> accept -> trim.

Token ids in, token ids out; one `StepEvent` per forward pass. With no proposer it is plain greedy
(or plain sampling) decoding through the very same code, which is the baseline for every figure.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field

from llma.backend import Argmax, Backend
from llma.proposer import Proposer
from llma.types import CopiedSpan, DecodeResult, DecodeStats, Draft, StepEvent
from llma.verifier import GreedyVerifier, RowsVerifier, Verdict, Verifier

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StopConfig:
    """When to stop: `max_new_tokens`, any of `eos_token_ids`, or a stop sequence of token ids.

    The EOS token or stop sequence is kept at the end of the output, as Hugging Face `generate` does.
    """

    max_new_tokens: int = 256
    eos_token_ids: frozenset[int] = frozenset()
    stop_sequences: tuple[tuple[int, ...], ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if any(len(s) == 0 for s in self.stop_sequences):
            raise ValueError("stop sequences must not be empty")


def _first_stop(output: Sequence[int], start: int, stop: StopConfig) -> tuple[int, str] | None:
    """Where the output must end, if a stop condition falls in `output[start:]`: (length, reason)."""
    for i in range(start, len(output)):
        if output[i] in stop.eos_token_ids:
            return i + 1, "eos"
        for seq in stop.stop_sequences:
            if i + 1 >= len(seq) and tuple(output[i + 1 - len(seq) : i + 1]) == seq:
                return i + 1, "stop_sequence"
    if len(output) >= stop.max_new_tokens:
        return stop.max_new_tokens, "max_new_tokens"
    return None


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
        prompt = list(prompt)
        context = self.backend.context_length
        if not prompt:
            raise ValueError("the prompt must hold at least one token")
        if len(prompt) > context:
            raise ValueError(f"the prompt has {len(prompt)} tokens, more than the model's context of "
                             f"{context}")
        verifier = verifier or GreedyVerifier()
        # The token generated from the last context position is never fed back, hence the + 1.
        room = context - len(prompt) + 1
        limit_reason = "max_new_tokens" if stop.max_new_tokens <= room else "context_full"
        stop = StopConfig(min(stop.max_new_tokens, room), stop.eos_token_ids, stop.stop_sequences)
        stop_ids = stop.eos_token_ids
        t0 = time.perf_counter()
        output: list[int] = []

        logits = self.backend.prefill(prompt)  # on a GPU: queued, the host goes on at once
        if proposer is not None:
            proposer.prepare()  # e.g. its reference index, built while the GPU prefills
        accepted, token = verifier.verify(logits, (), 0)
        # Decided once: a runtime-checkable protocol's isinstance costs tens of microseconds a call.
        rows_rule = isinstance(verifier, RowsVerifier)
        count = self._candidates(rows_rule)
        argmax = self.backend.forward_argmax if rows_rule else None
        sequence = list(prompt)  # prompt + output, for the proposer
        step = 0
        draft: Draft | None = None
        last_t = t0
        candidates = 0
        while True:
            before = len(output)
            new = [*(draft.tokens[:accepted] if draft else ()), token]
            output.extend(new)
            sequence.extend(new)
            ended = _first_stop(output, before, stop)
            if ended:
                del output[ended[0] :]
            now = time.perf_counter()
            kept = min(accepted, len(output) - before)  # a stop inside the draft cuts what counts as copied
            reason = None
            if ended:
                reason = limit_reason if ended[1] == "max_new_tokens" else ended[1]
            yield StepEvent(
                step=step, new_tokens=tuple(output[before:]), proposed=len(draft) if draft else 0,
                accepted=kept, span=_span(draft, kept, before) if draft and kept else None,
                elapsed_s=now - t0, step_s=now - last_t, finished=ended is not None, stop_reason=reason,
                candidates=candidates, draft_ref=draft.ref_id if draft else None,
            )
            if ended:
                return
            if proposer is not None:
                proposer.observe(new)
            step += 1
            last_t = now
            drafts = self._propose(proposer, sequence, stop.max_new_tokens - len(output), stop_ids, count)
            verdict = self._verify(drafts, output[-1], len(sequence), len(output), verifier, argmax)
            draft = drafts[verdict.draft] if drafts else None
            accepted = verdict.accepted
            token = verdict.next_token
            candidates = len(drafts)
            if proposer is not None and draft:
                proposer.feedback(draft, accepted)

    def _candidates(self, rows_rule: bool) -> int:
        """Drafts to verify per step: as many as the backend takes, if the verifier can choose among
        them (`rows_rule`: a RowsVerifier, deterministic rules only)."""
        most = self.backend.drafts_per_step
        return most if most > 1 and rows_rule else 1

    def _propose(self, proposer: Proposer | None, sequence: list[int], remaining: int,
                 stop_ids: Collection[int], count: int) -> list[Draft]:
        if proposer is None:
            return []
        # Room for the draft: the step also emits one token of its own, and the forward pass must fit
        # the context window after the cached tokens and the last token.
        room = min(remaining - 1, self.backend.context_length - self.backend.cached - 1)
        if self.backend.max_draft is not None:  # a fixed query block holds drafts this long at most
            room = min(room, self.backend.max_draft)
        if room <= 0:
            return []
        if count > 1:  # drafts packed into one block share it: the backend says how (draft_caps)
            return proposer.propose_many(sequence, room, stop_ids, count, self.backend.draft_caps)
        draft = proposer.propose(sequence, room, stop_ids)
        return [draft] if draft else []

    def _verify(self, drafts: list[Draft], last: int, cached: int, position: int, verifier: Verifier,
                argmax: Callable[[list[list[int]]], Argmax] | None) -> Verdict:
        """One forward over [last token + draft] (one row per draft where there are several), the
        verdict, and the cache cut back to the accepted tokens. `cached`: the sequence length with
        `last`; `position`: the output index of `last`'s successor; `argmax`: the backend's
        `forward_argmax` where the verifier chooses by the model's argmax alone (a RowsVerifier)."""
        rows = [[last, *d.tokens] for d in drafts] or [[last]]
        tokens = [d.tokens for d in drafts] or [()]
        if argmax is not None:
            verdict = verifier.verify_targets(argmax(rows).rows, tokens, position)
        else:  # one draft (a rule that reads the logits, e.g. sampling)
            verdict = Verdict(0, *verifier.verify(self.backend.forward(rows[0]), tokens[0], position))
        if len(rows) > 1:
            self.backend.keep(verdict.draft, cached + verdict.accepted)
        else:
            self.backend.trim(cached + verdict.accepted)
        return verdict

    def generate(self, prompt: Sequence[int], *, proposer: Proposer | None = None,
                 verifier: Verifier | None = None, stop: StopConfig = StopConfig()) -> DecodeResult:
        """`stream`'s events folded into one result."""
        return collect(self.stream(prompt, proposer=proposer, verifier=verifier, stop=stop))


def _span(draft: Draft, accepted: int, out_start: int) -> CopiedSpan:
    return CopiedSpan(draft.ref_id, draft.offset, draft.offset + accepted, out_start, out_start + accepted)


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
