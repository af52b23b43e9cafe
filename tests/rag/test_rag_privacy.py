"""Issue #24 with the real model: one session's cached answers never reach another session (nor a
caller without a session), and the greedy comparison compares like with like."""
from __future__ import annotations

import pytest

from index import DocumentIndex
from llma import EngineOptions, LoadedModel
from rag import Answer, RAGPipeline
from rag_fixtures import small

QUESTION = "Do dictionaries preserve insertion order?"


def cache_sources(answer: Answer) -> list[str]:
    return [k for k, s in answer.sources.items() if s.kind == "cache" or k.startswith("cache:")]


@pytest.fixture(scope="module")
def fresh_pipe(index: DocumentIndex, loaded: LoadedModel) -> RAGPipeline:
    return RAGPipeline(index, loaded)


def test_a_sessions_cached_answer_never_reaches_another_session(fresh_pipe: RAGPipeline) -> None:
    settings = small(24, use_answer_cache=True)
    alice = fresh_pipe.answer(QUESTION, settings=settings, session="alice")
    alice_again = fresh_pipe.answer(QUESTION, settings=settings, session="alice")
    # Alice's own cache works: her second answer has her first as a reference and copies from it.
    assert alice_again.sources["cache:0"].text == alice.text
    assert any(s.source_kind == "cache" for s in alice_again.spans)

    bob = fresh_pipe.answer(QUESTION, settings=settings, session="bob")
    assert cache_sources(bob) == [] and all(s.source_kind != "cache" for s in bob.spans)
    assert bob.text == alice.text  # the same question, answered without Alice's answer
    # Bob's answer is his own from now on; Alice still sees only hers (one entry: the same question).
    assert fresh_pipe.prepare(QUESTION, settings=settings, session="bob").references.keys() >= {"cache:0"}
    assert fresh_pipe.caches.get("alice").lookup(QUESTION, 0.5)[0].answer == alice.text
    assert len(fresh_pipe.caches.get("alice")) == 1


def test_without_a_session_no_cache_is_read_or_written(fresh_pipe: RAGPipeline) -> None:
    settings = small(24, use_answer_cache=True)
    fresh_pipe.answer(QUESTION, settings=settings, session="carol")
    stored = len(fresh_pipe.caches)
    anonymous = fresh_pipe.answer(QUESTION, settings=settings)
    assert cache_sources(anonymous) == []
    assert len(fresh_pipe.caches) == stored  # nothing stored for a caller without a session
    fresh_pipe.forget_session("carol")
    again = fresh_pipe.answer(QUESTION, settings=settings, session="carol")
    assert cache_sources(again) == []  # forgotten


@pytest.mark.parametrize("session", ["", "  ", 7])
def test_a_bad_session_is_refused(fresh_pipe: RAGPipeline, session: object) -> None:
    with pytest.raises(ValueError, match="session must be"):
        fresh_pipe.stream(QUESTION, settings=small(4), session=session)  # type: ignore[arg-type]


def test_comparing_twice_measures_the_same_decoding(index: DocumentIndex, loaded: LoadedModel) -> None:
    """The second comparison of a question no longer copies the first one's answer: the same
    references, the same forward passes, tokens identical to greedy, the spread reported. On the
    one-at-a-time engine: the batch engine's block size follows its measured host time, so its
    forward passes may differ run to run (never its tokens)."""
    pipe = RAGPipeline(index, loaded, engine_options=EngineOptions(batch_slots=0))
    settings = small(24, use_answer_cache=True)
    first = pipe.compare_with_greedy(QUESTION, settings=settings, repeats=2)
    second = pipe.compare_with_greedy(QUESTION, settings=settings, repeats=2)
    for comparison in (first, second):
        assert comparison.identical and comparison.llma.tokens == comparison.greedy.tokens
        assert comparison.llma.sources.keys() == comparison.greedy.sources.keys()
        assert cache_sources(comparison.llma) == []
        assert comparison.greedy.stats["proposed_tokens"] == 0
        assert comparison.repeats == len(comparison.speedups) == 2
        assert 0 < comparison.speedup_min <= comparison.speedup <= comparison.speedup_max
    assert second.llma.stats["forward_passes"] == first.llma.stats["forward_passes"]
    assert second.llma.stats["tokens_per_forward"] == first.llma.stats["tokens_per_forward"]
    assert len(pipe.caches) == 0  # the comparison stores nothing
    with pytest.raises(ValueError, match="repeats"):
        pipe.compare_with_greedy(QUESTION, settings=settings, repeats=0)
