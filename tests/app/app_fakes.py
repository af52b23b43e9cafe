"""A model-free stand-in for rag.RAGPipeline with the same stream/answer/compare surface.

It answers by quoting the first passage word by word, reporting the quote as a copied span, so the
UI code can be tested (and looked at) without loading a model."""
from __future__ import annotations

import socket
import time
from pathlib import Path
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class FakeSpan:
    start: int
    end: int
    source_kind: str
    source_id: str
    source_start: int
    source_end: int
    label: str


@dataclass(frozen=True)
class FakePassage:
    id: str
    number: int
    text: str
    source: str
    title: str
    score: float
    chunk_id: str


@dataclass
class FakeAnswer:
    text: str
    spans: list
    passages: list
    stats: dict
    steps: list
    stop_reason: str = "eos"
    sources: dict = field(default_factory=dict)


@dataclass
class FakeDelta:
    text: str
    spans: list = field(default_factory=list)
    passages: list | None = None
    done: bool = False
    answer: Any = None


@dataclass
class FakeComparison:
    llma: Any
    greedy: Any
    speedup: float
    identical: bool
    speedups: list = field(default_factory=list)


PASSAGE_TEXT = ("Dictionaries preserve insertion order, meaning that keys will be produced in the "
                "same order they were added sequentially over the dictionary. <script>x</script>")


REPEATED = "Dictionaries preserve"  # the answer's own words, copied again


class FakePipeline:
    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        self.delay, self.fail = delay, fail
        self.fail_message = "model exploded"
        self.calls: list[tuple[str, list, Any]] = []
        self.sessions: list[str | None] = []  # the session of each call, in order
        self.forgotten: list[str] = []
        self.uploads: dict[str, dict[str, int]] = {}
        self.index = None
        self.active = self.max_active = 0
        self.first_delay = 0.0  # seconds before the first delta (retrieval and prefill)
        self.script: str | None = None  # answer with this text (one delta per line) instead
        self.closed = 0  # streams that ended, finished or not
        # As a GPU's static backend would report them (RAGPipeline.draft_defaults).
        self.draft_defaults = SimpleNamespace(min_n=1, k=31, adaptive=False, policy="longest")

    def passages(self) -> list[FakePassage]:
        return [FakePassage("passage:1", 1, PASSAGE_TEXT, "typesmapping.md", "Mapping types", 0.81,
                            "c1"),
                FakePassage("passage:2", 2, "Unrelated <b>text</b> & more.", "other.md", "Other",
                            0.42, "c2")]

    def stream(self, question: str, history=None, settings=None, session=None):
        self.calls.append((question, list(history or []), settings))
        self.sessions.append(session)
        if self.fail:
            raise RuntimeError(self.fail_message)
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            if self.first_delay:
                time.sleep(self.first_delay)
            yield from (self._scripted(self.script) if self.script is not None else self._stream())
        finally:
            self.active -= 1
            self.closed += 1

    def _scripted(self, text: str):
        lines = text.splitlines(keepends=True)
        for i, line in enumerate(lines):
            yield FakeDelta(line, [], self.passages() if i == 0 else None)
            if self.delay:
                time.sleep(self.delay)
        stats = {"forward_passes": len(lines), "tokens": len(lines), "proposed_tokens": 0,
                 "accepted_tokens": 0, "tokens_per_forward": 1.0, "acceptance_rate": 0.0,
                 "copied_share": 0.0, "tokens_per_s": 10.0, "wall_s": 0.1, "ttft_s": 0.01,
                 "prompt_tokens": 100}
        steps = [{"proposed": 0, "accepted": 0, "new_tokens": 1, "step_s": 0.01, "source": None}
                 for _ in lines]
        yield FakeDelta("", [], None, True, FakeAnswer(text, [], self.passages(), stats, steps))

    def _stream(self):
        """'Yes. ' + a quote of the first passage (a copied span), then the quote's first words
        again (copied from the answer itself: a span of kind "output"), word by word; the steps
        count the same copies (6 + 2 tokens from the passage, 3 from the answer)."""
        passages = self.passages()
        prefix = "Yes. "
        quote = PASSAGE_TEXT[:38]  # "Dictionaries preserve insertion order,"
        words = [prefix] + [w + " " for w in quote.split(" ")]
        words[-1] = words[-1].rstrip()
        text, spans = "", []
        for i, word in enumerate(words):
            text += word
            new_spans = []
            if i > 0:
                end = len(text)
                span = FakeSpan(len(prefix), end, "passage", "passage:1", 0, end - len(prefix),
                                "[1] Mapping types")
                spans = [span]
                new_spans = [span]
            yield FakeDelta(word, new_spans, passages if i == 0 else None)
            if self.delay:
                time.sleep(self.delay)
        repeat = " " + REPEATED
        start = len(text) + 1
        text += repeat
        own = FakeSpan(start, start + len(REPEATED), "output", "output", len(prefix),
                       len(prefix) + len(REPEATED), "this answer, earlier words")
        spans = spans + [own]
        yield FakeDelta(repeat, [own])
        steps = [{"proposed": 0, "accepted": 0, "new_tokens": 1, "step_s": 0.01, "source": None},
                 {"proposed": 8, "accepted": 6, "new_tokens": 7, "step_s": 0.01, "source": "passage"},
                 {"proposed": 8, "accepted": 2, "new_tokens": 3, "step_s": 0.01, "source": "passage"},
                 {"proposed": 4, "accepted": 3, "new_tokens": 4, "step_s": 0.01, "source": "output"}]
        stats = {"forward_passes": 4, "tokens": 15, "proposed_tokens": 20, "accepted_tokens": 11,
                 "tokens_per_forward": 15 / 4, "acceptance_rate": 11 / 20, "copied_share": 11 / 15,
                 "tokens_per_s": 42.0, "wall_s": 0.36, "ttft_s": 0.05, "prompt_tokens": 300}
        answer = FakeAnswer(text, spans, passages, stats, steps)
        yield FakeDelta("", [], None, True, answer)

    def answer(self, question, history=None, settings=None, session=None):
        final = None
        for delta in self.stream(question, history, settings, session):
            final = delta.answer or final
        return final

    def compare_with_greedy(self, question, history=None, settings=None, session=None):
        a = self.answer(question, history, settings)
        g = FakeAnswer(a.text, [], a.passages, dict(a.stats, wall_s=0.5, forward_passes=11), [])
        return FakeComparison(a, g, 0.5 / 0.26, True, [1.5, 0.5 / 0.26, 2.25])

    def forget_session(self, session):
        self.forgotten.append(session)
        self.uploads.pop(session, None)

    # Private uploads (RAGPipeline.add_document / remove_document / documents), per session.
    def add_document(self, session, path, name, on_progress=None):
        text = Path(path).read_text(encoding="utf-8", errors="replace")
        if not text.strip():
            raise ValueError(f"{name}: no extractable text")
        for done in range(3):
            if on_progress:
                on_progress(done, 2)
        self.uploads.setdefault(session, {})[name] = 2
        return 2

    def remove_document(self, session, name):
        return self.uploads.get(session, {}).pop(name, None) is not None

    def documents(self, session):
        return dict(self.uploads.get(session, {}))
