"""Response bodies and stream chunks in OpenAI's shapes, with LLMA's extension field `llma`.

`usage.completion_tokens_details`: `accepted_prediction_tokens` counts the prediction's tokens that
the answer copied (drafted from the prediction and accepted by the model); `rejected_prediction_tokens`
those drafted from it that the model did not accept (they were computed, as OpenAI bills them).
The extension `llma` carries, per choice, the copied spans (character offsets in the choice's text
and in the source, with the source's id), the decoding statistics and the generated token ids; for `llma-rag`, the retrieved
passages as `sources`.
"""
from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

from rag.serve.convert import PREDICTION_ID
from rag.types import Answer, Passage, TextSpan

_FINISH = {"eos": "stop", "stop_string": "stop", "stop_sequence": "stop", "max_new_tokens": "length",
           "context_full": "length"}


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def finish_reason(answer: Answer) -> str:
    return _FINISH.get(answer.stop_reason, "stop")


def span_json(span: TextSpan) -> dict[str, Any]:
    return {"start": span.start, "end": span.end, "source_id": span.source_id, "source_kind": span.source_kind,
            "source_start": span.source_start, "source_end": span.source_end, "label": span.label}


def passage_json(passage: Passage) -> dict[str, Any]:
    return {"id": passage.id, "number": passage.number, "title": passage.title, "source": passage.source,
            "score": passage.score, "text": passage.text, "chunk_id": passage.chunk_id}


def prediction_counts(answer: Answer) -> tuple[int, int]:
    """(accepted, rejected) prediction tokens of one answer (see the module's docstring)."""
    by_source = answer.stats.get("drafts_by_source")
    counts = by_source.get(PREDICTION_ID) if isinstance(by_source, dict) else None
    if not counts:
        return 0, 0
    return int(counts["accepted"]), int(counts["proposed"]) - int(counts["accepted"])


def usage(answers: Sequence[Answer], n: int) -> dict[str, Any]:
    """Usage of a request's answers, `n` per prompt (a prompt's tokens are counted once)."""
    prompt = sum(int(a.stats["prompt_tokens"]) for a in answers[::n])
    completion = sum(int(a.stats["tokens"]) for a in answers)
    accepted = sum(prediction_counts(a)[0] for a in answers)
    rejected = sum(prediction_counts(a)[1] for a in answers)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                          "accepted_prediction_tokens": accepted,
                                          "rejected_prediction_tokens": rejected}}


def choice_extension(answer: Answer, index: int) -> dict[str, Any]:
    return {"index": index, "spans": [span_json(s) for s in answer.spans], "stats": answer.stats,
            "stop_reason": answer.stop_reason, "tokens": list(answer.tokens)}


def chat_body(rid: str, model: str, answers: Sequence[Answer], n: int, rag: bool) -> dict[str, Any]:
    choices = [{"index": i, "message": {"role": "assistant", "content": a.text, "refusal": None},
                "finish_reason": finish_reason(a), "logprobs": None} for i, a in enumerate(answers)]
    return {"id": rid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "system_fingerprint": None, "choices": choices, "usage": usage(answers, n),
            "llma": _extension(answers, rag)}


def completion_body(rid: str, model: str, answers: Sequence[Answer], n: int) -> dict[str, Any]:
    choices = [{"index": i, "text": a.text, "finish_reason": finish_reason(a), "logprobs": None}
               for i, a in enumerate(answers)]
    return {"id": rid, "object": "text_completion", "created": int(time.time()), "model": model,
            "system_fingerprint": None, "choices": choices, "usage": usage(answers, n),
            "llma": _extension(answers, False)}


def _extension(answers: Sequence[Answer], rag: bool) -> dict[str, Any]:
    ext: dict[str, Any] = {"choices": [choice_extension(a, i) for i, a in enumerate(answers)]}
    if rag:
        ext["sources"] = [passage_json(p) for p in (answers[0].passages if answers else [])]
    return ext


class ChunkWriter:
    """The stream's chunks: `chat.completion.chunk` or `text_completion` objects, one id and time."""

    def __init__(self, model: str, chat: bool, include_usage: bool) -> None:
        self.id = new_id("chatcmpl" if chat else "cmpl")
        self.created = int(time.time())
        self.model, self.chat, self.include_usage = model, chat, include_usage

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        chunk = {"id": self.id, "object": "chat.completion.chunk" if self.chat else "text_completion",
                 "created": self.created, "model": self.model, "system_fingerprint": None, "choices": choices}
        if self.include_usage:
            chunk["usage"] = None
        chunk.update(extra)
        return chunk

    def _choice(self, index: int, text: str | None, finish: str | None, role: bool = False) -> dict[str, Any]:
        if not self.chat:
            return {"index": index, "text": text or "", "finish_reason": finish, "logprobs": None}
        delta: dict[str, Any] = {"role": "assistant"} if role else {}
        if text is not None:
            delta["content"] = text
        return {"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}

    def start(self, index: int, passages: list[Passage] | None) -> dict[str, Any] | None:
        """A chat choice's first chunk (the role); with the retrieved passages for llma-rag."""
        if not self.chat:
            return None
        extra = {"llma": {"sources": [passage_json(p) for p in passages]}} if passages is not None else {}
        return self._chunk([self._choice(index, "", None, role=True)], **extra)

    def text(self, index: int, text: str, spans: list[TextSpan]) -> dict[str, Any]:
        extra = {"llma": {"index": index, "spans": [span_json(s) for s in spans]}} if spans else {}
        return self._chunk([self._choice(index, text, None)], **extra)

    def finish(self, answer: Answer, index: int) -> dict[str, Any]:
        return self._chunk([self._choice(index, None if self.chat else "", finish_reason(answer))],
                           llma=choice_extension(answer, index))

    def usage(self, answers: Sequence[Answer], n: int) -> dict[str, Any] | None:
        if not self.include_usage:
            return None
        chunk = self._chunk([])
        chunk["usage"] = usage(answers, n)
        return chunk
