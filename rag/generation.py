"""One generation: engine events in, `AnswerDelta`s out (text, copied spans, statistics).

The caller holds the pipeline's lock while iterating: one engine has one KV cache.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from transformers import PreTrainedTokenizerBase

from llma import OUTPUT_REF, DecodeStats, Engine, LLMAConfig, StepEvent
from rag.references import Reference
from rag.textspans import AnswerText, add_span, clip_spans, self_span, to_text_span
from rag.types import Answer, AnswerDelta, Passage, SourceText, TextSpan


@dataclass
class Request:
    """Everything one generation needs; `stop` strings end the answer (they are not kept)."""

    prompt_ids: list[int]
    references: dict[str, Reference]
    config: LLMAConfig
    stop: Sequence[str] = ()
    passages: list[Passage] = field(default_factory=list)


def _find_stop(text: str, stop: Sequence[str], search_from: int) -> int | None:
    hits = [i for s in stop if (i := text.find(s, max(0, search_from - len(s)))) >= 0]
    return min(hits) if hits else None


def _held_back(text: str, stop: Sequence[str]) -> int:
    """How many trailing characters could be the start of a stop string (not shown yet)."""
    return max((n for s in stop for n in range(1, len(s)) if text.endswith(s[:n])), default=0)


class _Run:
    """The state of one generation while its events arrive."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, request: Request) -> None:
        self.request = request
        self.answer = AnswerText(tokenizer)
        self.stats = DecodeStats()
        self.steps: list[dict[str, float | int]] = []
        self.spans: list[TextSpan] = []
        self.sent = ""
        self.sent_spans: dict[int, int] = {}  # start -> end of each span as last sent
        self.stop_reason = "max_new_tokens"
        self.drafts_by_source: dict[str, dict[str, int]] = {}  # ref id -> drafted and accepted tokens

    def step(self, event: StepEvent) -> AnswerDelta:
        self.stats.add(event)
        self.answer.extend(event.new_tokens)
        if event.draft_ref is not None and event.proposed:
            counts = self.drafts_by_source.setdefault(str(event.draft_ref), {"proposed": 0, "accepted": 0})
            counts["proposed"] += event.proposed
            counts["accepted"] += event.accepted
        ref = self.request.references.get(str(event.span.ref_id)) if event.span else None
        source = None  # the kind of text this step's accepted tokens were copied from
        if event.span and event.span.ref_id == OUTPUT_REF:  # the answer repeating itself
            span = self_span(event.span, self.answer)
            if span:
                add_span(self.spans, span, self.answer.text, self.answer.text)
            source = "output" if span else "blank"
        elif event.span and ref:
            span = to_text_span(event.span, self.answer, ref)
            if span:
                add_span(self.spans, span, self.answer.text, ref.source.text)
            source = ref.source.kind if span else "blank"
        self.steps.append({"step": event.step, "proposed": event.proposed, "accepted": event.accepted,
                           "new_tokens": len(event.new_tokens), "step_s": event.step_s,
                           "source": source if event.accepted else None})
        self.stop_reason = event.stop_reason or self.stop_reason
        cut = _find_stop(self.answer.text, self.request.stop, len(self.sent))
        if cut is not None:
            self.stop_reason = "stop_string"
            return self._delta(self.answer.text[:cut], done=True)
        if event.finished:  # a length limit may have cut a multi-byte character: drop the part
            return self._delta(self.answer.stable, done=True)
        visible = self.answer.stable
        return self._delta(visible[: len(visible) - _held_back(visible, self.request.stop)], done=False)

    def _delta(self, visible: str, done: bool) -> AnswerDelta:
        # Text is only ever appended; the held-back tail is never shorter than what was sent.
        new_text = visible[len(self.sent):] if len(visible) > len(self.sent) else ""
        self.sent += new_text
        if done:
            self.spans = clip_spans(self.spans, len(self.sent))
        fresh = [s for s in self.spans if s.end <= len(self.sent) and self.sent_spans.get(s.start) != s.end]
        self.sent_spans.update((s.start, s.end) for s in fresh)
        return AnswerDelta(text=new_text, spans=fresh, done=done, answer=self._answer() if done else None)

    def _answer(self) -> Answer:
        stats = {**self.stats.as_dict(), "prompt_tokens": len(self.request.prompt_ids),
                 "references": len(self.request.references),
                 "drafts_by_source": {k: dict(v) for k, v in self.drafts_by_source.items()}}
        sources: dict[str, SourceText] = {k: r.source for k, r in self.request.references.items()}
        return Answer(text=self.sent, spans=list(self.spans), passages=list(self.request.passages), stats=stats,
                      steps=self.steps, stop_reason=self.stop_reason, tokens=list(self.answer.tokens),
                      sources=sources)


def run(engine: Engine, request: Request) -> Iterator[AnswerDelta]:
    """Deltas of one generation; the first carries the passages, the last (`done`) the Answer."""
    run_state = _Run(engine.loaded.tokenizer, request)
    refs = {ref_id: list(ref.token_ids) for ref_id, ref in request.references.items()}
    events = engine.stream(request.prompt_ids, refs, request.config)
    try:
        first = True
        for event in events:
            delta = run_state.step(event)
            if first:
                delta.passages, first = list(request.passages), False
            yield delta
            if delta.done:
                return
    finally:
        events.close()  # a stop string or an abandoned stream ends the engine's generation too
