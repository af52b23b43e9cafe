"""Turn the pipeline's stream of AnswerDeltas into what the chat shows, step by step."""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .highlight import render_answer, render_user, render_waiting
from .stats import stats_footer

STOPPED_NOTE = "⏹ Stopped: the answer was cut here."

def check_question(message: str | None, max_chars: int | None = None) -> tuple[str, str | None]:
    """(question, None) when it can be asked, else ("", reason to show the user). `max_chars`: the
    library's own limit (rag.inputs.MAX_QUESTION_CHARS) unless given, so the page and the library
    accept the same questions."""
    from rag.inputs import MAX_QUESTION_CHARS, clean_text  # late: rag imports torch; the page comes first

    if max_chars is None:
        max_chars = MAX_QUESTION_CHARS
    question = clean_text(message if isinstance(message, str) else "").strip()
    if not question:
        return "", "Type a question first."
    if len(question) > max_chars:
        return "", (f"The question is too long ({len(question):,} characters; the limit is "
                    f"{max_chars:,}). Shorten it, or upload the text as a document and ask about it.")
    return question, None


@dataclass
class StreamView:
    """The answer so far: text, its spans (keyed by start: a grown span replaces the old one)."""

    text: str = ""
    spans_by_start: dict[int, Any] = field(default_factory=dict)
    passages: list[Any] = field(default_factory=list)
    answer: Any = None  # the final Answer, once done

    @property
    def spans(self) -> list[Any]:
        if self.answer is not None:
            return list(self.answer.spans)
        return [self.spans_by_start[k] for k in sorted(self.spans_by_start)]

    def add(self, delta: Any) -> None:
        self.text += delta.text or ""
        for span in delta.spans or ():
            self.spans_by_start[span.start] = span
        if delta.passages is not None:
            self.passages = list(delta.passages)
        if delta.done and delta.answer is not None:
            self.answer = delta.answer
            self.text = delta.answer.text
            self.passages = list(delta.answer.passages or self.passages)

    @property
    def stop_reason(self) -> str | None:
        return getattr(self.answer, "stop_reason", None)

    def html(self, stopped: bool = False) -> str:
        """The message: a spinner until the first text arrives, then the highlighted Markdown."""
        if not self.text and self.answer is None and not stopped:
            return render_waiting()
        footer = stats_footer(self.answer.stats) if self.answer is not None else ""
        return render_answer(self.text, self.spans, footer, STOPPED_NOTE if stopped else "")


def follow(deltas: Iterable[Any]) -> Iterator[StreamView]:
    """Yield the (same, updated) view after every delta."""
    view = StreamView()
    for delta in deltas:
        view.add(delta)
        yield view


def user_message(question: str) -> dict[str, str]:
    return {"role": "user", "content": render_user(question)}


def assistant_message(html: str) -> dict[str, str]:
    return {"role": "assistant", "content": html}
