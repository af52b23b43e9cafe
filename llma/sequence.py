"""One generation's state between forward passes: what the decoder loop (llma.decoder) and the batch
scheduler (llma.batch) share, so a request decodes by the same rules alone or in a batch.

Token ids only. The caller runs the forwards; this object proposes the drafts, turns each step's
verdict into a `StepEvent`, and applies the stop conditions.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from llma.proposer import Proposer
from llma.repetition import LoopDetector, RepetitionStop
from llma.types import CopiedSpan, Draft, StepEvent
from llma.verifier import GreedyVerifier, RowsVerifier, Verdict, Verifier


@dataclass(frozen=True)
class StopConfig:
    """When to stop: `max_new_tokens`, any of `eos_token_ids`, a stop sequence of token ids, or a
    loop in the output (`repetition`, llma.repetition; None: off).

    The EOS token, stop sequence or loop's last token is kept at the end of the output, as Hugging
    Face `generate` keeps its EOS token.
    """

    max_new_tokens: int = 256
    eos_token_ids: frozenset[int] = frozenset()
    stop_sequences: tuple[tuple[int, ...], ...] = field(default_factory=tuple)
    repetition: RepetitionStop | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if any(len(s) == 0 for s in self.stop_sequences):
            raise ValueError("stop sequences must not be empty")


def first_stop(output: Sequence[int], start: int, stop: StopConfig,
               loop: LoopDetector | None = None) -> tuple[int, str] | None:
    """Where the output must end, if a stop condition falls in `output[start:]`: (length, reason).
    `loop` has seen `output[:start]`; it is given the tokens up to the stop."""
    for i in range(start, len(output)):
        if output[i] in stop.eos_token_ids:
            return i + 1, "eos"
        for seq in stop.stop_sequences:
            if i + 1 >= len(seq) and tuple(output[i + 1 - len(seq) : i + 1]) == seq:
                return i + 1, "stop_sequence"
        if loop is not None and loop.push(output[i]):
            return i + 1, "repetition"
    if len(output) >= stop.max_new_tokens:
        return stop.max_new_tokens, "max_new_tokens"
    return None


class DecodeState:
    """A generation of `prompt` in a context of `context_length` tokens.

    Use: `start(first)` with the verdict on the prefill's logits, then per step `propose(...)`, one
    forward over `rows(drafts)`, and `advance(drafts, verdict)`; each returns the step's event, the
    last one `finished`. The prompt is checked here (ValueError if empty or longer than the context).
    """

    def __init__(self, prompt: Sequence[int], context_length: int, proposer: Proposer | None = None,
                 verifier: Verifier | None = None, stop: StopConfig = StopConfig()) -> None:
        prompt = list(prompt)
        if not prompt:
            raise ValueError("the prompt must hold at least one token")
        if len(prompt) > context_length:
            raise ValueError(f"the prompt has {len(prompt)} tokens, more than the model's context of "
                             f"{context_length}")
        self.prompt_length = len(prompt)
        self.context_length = context_length
        self.proposer = proposer
        self.verifier = verifier or GreedyVerifier()
        # Decided once: a runtime-checkable protocol's isinstance costs tens of microseconds a call.
        self.rows_rule = isinstance(self.verifier, RowsVerifier)
        # A rows rule reads the model's argmax alone, unless it reads the logits (penalties).
        self.argmax_rule = self.rows_rule and not self.verifier.reads_logits
        # The token generated from the last context position is never fed back, hence the + 1.
        room = context_length - len(prompt) + 1
        self.limit_reason = "max_new_tokens" if stop.max_new_tokens <= room else "context_full"
        self.stop = replace(stop, max_new_tokens=min(stop.max_new_tokens, room))
        self.loop = stop.repetition.detector() if stop.repetition else None
        self.output: list[int] = []
        self.sequence = prompt  # prompt + output, for the proposer
        self.step = 0
        self.finished = False
        self.t0 = time.perf_counter()
        self._last_t = self.t0

    @property
    def cached(self) -> int:
        """Tokens whose keys the cache holds between steps: the sequence but its last token."""
        return len(self.sequence) - 1

    @property
    def last(self) -> int:
        return self.sequence[-1]

    def start(self, verdict: tuple[int, int], batch: int = 1, reused: int = 0) -> StepEvent:
        """The first event, from the verdict `(0, token)` on the prefill's last logits; `batch`: the
        requests that shared the step; `reused`: prompt tokens restored, not computed."""
        return self._emit(None, 0, verdict[1], 0, batch, reused)

    def propose(self, count: int, caps: Sequence[int], max_draft: int | None) -> list[Draft]:
        """Up to `count` drafts for the next step (packed drafts share a block by `caps`), each at most
        `max_draft` long; none without a proposer or room."""
        if self.proposer is None:
            return []
        # Room for a draft: the step also emits one token of its own, and the forward must fit the
        # context after the cached tokens and the last token.
        room = min(self.stop.max_new_tokens - len(self.output) - 1, self.context_length - len(self.sequence))
        if max_draft is not None:
            room = min(room, max_draft)
        if room <= 0:
            return []
        if count > 1:
            return self.proposer.propose_many(self.sequence, room, self.stop.eos_token_ids, count, caps)
        draft = self.proposer.propose(self.sequence, room, self.stop.eos_token_ids)
        return [draft] if draft else []

    def rows(self, drafts: Sequence[Draft]) -> list[list[int]]:
        """The step's token rows: [last token, *draft] per draft, or [last token] alone."""
        return [[self.last, *d.tokens] for d in drafts] or [[self.last]]

    def verdict(self, drafts: Sequence[Draft], targets, logits) -> Verdict:  # noqa: ANN001
        """The verdict of a step over `rows(drafts)`: from `targets()` ([draft][row] argmax) by an
        argmax rule, else from `logits()`: [drafts, longest row, vocab] for a rows rule (penalties),
        one draft's [rows, vocab] for another; each callable is read only if needed."""
        tokens = [d.tokens for d in drafts] or [()]
        position = len(self.output)
        if self.argmax_rule:
            return self.verifier.verify_targets(targets, tokens, position)
        if self.rows_rule:
            return self.verifier.verify_rows(logits(), tokens, position)
        return Verdict(0, *self.verifier.verify(logits(), tokens[0], position))

    def advance(self, drafts: Sequence[Draft], verdict: Verdict, batch: int = 1) -> StepEvent:
        """The step's event: the kept draft's accepted tokens and the next token, up to a stop;
        `batch`: the requests that shared the step."""
        draft = drafts[verdict.draft] if drafts else None
        if self.proposer is not None and draft:
            self.proposer.feedback(draft, verdict.accepted)
        return self._emit(draft, verdict.accepted, verdict.next_token, len(drafts), batch)

    def _emit(self, draft: Draft | None, accepted: int, token: int, candidates: int, batch: int,
              reused: int = 0) -> StepEvent:
        before = len(self.output)
        new = [*(draft.tokens[:accepted] if draft else ()), token]
        self.output.extend(new)
        self.sequence.extend(new)
        ended = first_stop(self.output, before, self.stop, self.loop)
        if ended:
            cut = len(self.output) - ended[0]
            del self.output[ended[0] :]
            if cut:
                del self.sequence[-cut:]
        now = time.perf_counter()
        kept = min(accepted, len(self.output) - before)  # a stop inside the draft cuts what counts as copied
        reason = None
        if ended:
            reason = self.limit_reason if ended[1] == "max_new_tokens" else ended[1]
        event = StepEvent(
            step=self.step, new_tokens=tuple(self.output[before:]), proposed=len(draft) if draft else 0,
            accepted=kept, span=_span(draft, kept, before) if draft and kept else None,
            elapsed_s=now - self.t0, step_s=now - self._last_t, finished=ended is not None,
            stop_reason=reason, candidates=candidates, draft_ref=draft.ref_id if draft else None, batch=batch,
            reused=reused,
        )
        self.step += 1
        self._last_t = now
        self.finished = ended is not None
        if not self.finished and self.proposer is not None:
            self.proposer.observe(new)
        return event


def _span(draft: Draft, accepted: int, out_start: int) -> CopiedSpan:
    return CopiedSpan(draft.ref_id, draft.offset, draft.offset + accepted, out_start, out_start + accepted)
