"""Unit tests without a model: span merging and clipping, stop strings, the answer cache, settings."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from rag.cache import AnswerCache, SessionCaches
from rag.generation import _find_stop, _held_back
from rag.textspans import add_span, clip_spans
from rag.types import RagSettings, TextSpan


def span(start: int, end: int, src_start: int, source_id: str = "passage:1") -> TextSpan:
    return TextSpan(start, end, "passage", source_id, src_start, src_start + end - start, "[1] t")


def test_add_span_merges_a_continuation_across_the_models_own_token() -> None:
    answer, source = "say hello big world", "hello big world"
    spans: list[TextSpan] = []
    add_span(spans, span(4, 9, 0), answer, source)  # "hello"
    merged = add_span(spans, span(13, 19, 9), answer, source)  # " world", after " big" (model's own)
    assert spans == [merged] and (merged.start, merged.end, merged.source_start, merged.source_end) == (4, 19, 0, 15)


def test_add_span_keeps_separate_spans_when_the_gap_differs_or_the_source_jumps_back() -> None:
    answer, source = "ab-cd", "abXcd ab"
    spans: list[TextSpan] = []
    add_span(spans, span(0, 2, 0), answer, source)
    add_span(spans, span(3, 5, 3), answer, source)  # "-" != "X"
    assert len(spans) == 2
    add_span(spans, span(5, 5, 0), answer, source)  # back in the source: never merged
    assert len(spans) == 3


def test_add_span_never_merges_different_sources() -> None:
    spans: list[TextSpan] = []
    add_span(spans, span(0, 2, 0, "passage:1"), "abab", "abab")
    add_span(spans, span(2, 4, 2, "passage:2"), "abab", "abab")
    assert [s.source_id for s in spans] == ["passage:1", "passage:2"]


def test_clip_spans_cuts_at_the_new_length() -> None:
    clipped = clip_spans([span(0, 4, 10), span(6, 9, 20), span(12, 14, 30)], 8)
    assert [(s.start, s.end, s.source_start, s.source_end) for s in clipped] == [(0, 4, 10, 14), (6, 8, 20, 22)]


def test_stop_strings_are_found_and_their_prefixes_held_back() -> None:
    assert _find_stop("one two\nthree", ["\n", "two"], 0) == 4
    assert _find_stop("one two", ["three"], 0) is None
    assert _held_back("answer END", ["ENDING"]) == 3
    assert _held_back("answer", ["ENDING"]) == 0


class WordEmbedder:
    """Bag-of-words vectors: questions with the same words have similarity 1."""

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}

    def embed(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), 64), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                out[row, self.vocab.setdefault(word, len(self.vocab) % 64)] += 1
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


def test_answer_cache_finds_similar_questions_best_first() -> None:
    cache = AnswerCache(WordEmbedder(), capacity=8)  # type: ignore[arg-type]
    cache.put("what is a volcano", "A rupture in the crust.")
    cache.put("what is a cat", "A small mammal.")
    hits = cache.lookup("What is a volcano", threshold=0.99)
    assert [h.answer for h in hits] == ["A rupture in the crust."] and hits[0].similarity == pytest.approx(1.0)
    assert cache.lookup("bread baking oven", threshold=0.5) == []


def test_answer_cache_is_bounded_lru_and_skips_empty_answers() -> None:
    cache = AnswerCache(WordEmbedder(), capacity=2)  # type: ignore[arg-type]
    cache.put("q one", "a1")
    cache.put("q two", "a2")
    cache.lookup("q one", threshold=0.99)  # touch: "q two" is now the oldest
    cache.put("q three", "a3")
    cache.put("q four", "   ")
    assert len(cache) == 2
    assert cache.lookup("q two", threshold=0.99) == []
    assert [h.answer for h in cache.lookup("q one", threshold=0.99)] == ["a1"]


def test_answer_cache_survives_concurrent_writers() -> None:
    cache = AnswerCache(WordEmbedder(), capacity=16)  # type: ignore[arg-type]
    threads = [threading.Thread(target=lambda i=i: [cache.put(f"q {i} {j}", "a") for j in range(20)]) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(cache) == 16


def test_session_caches_keep_each_sessions_answers_apart() -> None:
    caches = SessionCaches(WordEmbedder(), capacity=4, max_sessions=2)  # type: ignore[arg-type]
    caches.get("alice").put("what is a volcano", "Alice's answer.")
    assert caches.peek("bob") is None and caches.sessions == 1  # peeking makes no cache
    assert caches.get("bob").lookup("what is a volcano", threshold=0.5) == []
    assert [h.answer for h in caches.get("alice").lookup("what is a volcano", 0.99)] == ["Alice's answer."]
    assert len(caches) == 1


def test_session_caches_drop_the_least_recent_session_and_forget_on_request() -> None:
    caches = SessionCaches(WordEmbedder(), capacity=4, max_sessions=2)  # type: ignore[arg-type]
    for session in ("a", "b"):
        caches.get(session).put("q", f"answer of {session}")
    caches.peek("a")  # touch: "b" is now the least recent
    caches.get("c")
    assert caches.peek("b") is None and caches.peek("a") is not None and caches.sessions == 2
    caches.forget("a")
    caches.forget("never seen")
    assert caches.peek("a") is None and len(caches) == 0
    with pytest.raises(ValueError):
        SessionCaches(WordEmbedder(), max_sessions=0)  # type: ignore[arg-type]


@pytest.mark.parametrize("kwargs", [{"top_k": -1}, {"cache_threshold": 1.5}, {"stop": ("",)}])
def test_bad_settings_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        RagSettings(**kwargs)
