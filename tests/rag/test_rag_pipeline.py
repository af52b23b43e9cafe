"""The pipeline with the real model: LLMA equals greedy, spans point at the right text, references."""
from __future__ import annotations

import threading

import pytest

from rag_fixtures import QUESTIONS, small
from index import DocumentIndex
from llma import EngineOptions, LLMAConfig, LoadedModel
from rag import Answer, RAGPipeline, RagSettings


def assert_spans_match_their_sources(answer: Answer) -> None:
    for span in answer.spans:
        if span.source_kind == "output":  # copied from the answer itself: positions in its own text
            assert answer.text[span.start:span.end] == answer.text[span.source_start:span.source_end] != ""
            continue
        source = answer.sources[span.source_id]
        assert answer.text[span.start:span.end] == source.text[span.source_start:span.source_end] != ""
        assert span.source_kind == source.kind and span.label == source.label
    assert all(a.end <= b.start for a, b in zip(answer.spans, answer.spans[1:]))


@pytest.mark.parametrize("question", QUESTIONS)
def test_llma_answers_exactly_as_greedy_decoding(pipe: RAGPipeline, question: str) -> None:
    comparison = pipe.compare_with_greedy(question, settings=small(24), repeats=1)
    assert comparison.identical and comparison.llma.text == comparison.greedy.text
    assert comparison.greedy.stats["proposed_tokens"] == 0 and comparison.greedy.spans == []
    assert comparison.speedup > 0
    assert_spans_match_their_sources(comparison.llma)


def test_answer_has_passages_stats_steps_and_copied_spans(pipe: RAGPipeline) -> None:
    answer = pipe.answer("What is the with statement used for?", settings=small(32))
    assert [p.number for p in answer.passages] == list(range(1, len(answer.passages) + 1))
    assert answer.passages[0].source == "with.md" and answer.passages[0].id == "passage:1"
    assert answer.stats["prompt_tokens"] > 50 and answer.stats["tokens"] == len(answer.tokens) <= 32
    assert len(answer.steps) == answer.stats["forward_passes"]
    assert sum(s["new_tokens"] for s in answer.steps) == answer.stats["tokens"]
    assert answer.spans, "the model copies from the passage about the with statement"
    assert {s.source_kind for s in answer.spans} <= {"passage"}
    assert_spans_match_their_sources(answer)


def test_earlier_turns_are_references(pipe: RAGPipeline) -> None:
    history = [{"role": "user", "content": "What is a volcano?"},
               {"role": "assistant", "content": "A volcano is a rupture in the crust of a planet."}]
    request = pipe.prepare("Say that again.", history, small())
    assert {"history:0", "history:1"} <= set(request.references)
    off = pipe.prepare("Say that again.", history, small(use_history_refs=False))
    assert not any(r.startswith("history:") for r in off.references)
    answer = pipe.answer("Say that again.", history, small(24))
    assert_spans_match_their_sources(answer)


def test_a_repeated_question_copies_from_the_answer_cache(index: DocumentIndex, loaded: LoadedModel) -> None:
    pipe = RAGPipeline(index, loaded)
    settings = small(24, use_answer_cache=True)
    first = pipe.answer("Do dictionaries preserve insertion order?", settings=settings, session="s")
    second = pipe.answer("Do dictionaries keep insertion order?", settings=settings, session="s")
    assert "cache:0" in second.sources and second.sources["cache:0"].text == first.text
    again = pipe.answer("Do dictionaries preserve insertion order?", settings=settings, session="s")
    assert again.text == first.text and any(s.source_kind == "cache" for s in again.spans)
    assert again.stats["tokens_per_forward"] > first.stats["tokens_per_forward"]
    assert_spans_match_their_sources(again)


def test_stop_strings_truncate_the_answer(pipe: RAGPipeline) -> None:
    full = pipe.answer(QUESTIONS[0], settings=small(24))
    word = full.text.split()[3]
    stopped = pipe.answer(QUESTIONS[0], settings=small(24, stop=(word,)))
    assert stopped.stop_reason == "stop_string" and stopped.text == full.text[:full.text.index(word)]
    assert_spans_match_their_sources(stopped)


def test_without_an_index_there_is_no_retrieval(loaded: LoadedModel, index: DocumentIndex) -> None:
    pipe = RAGPipeline(None, loaded, embedder=index.embedder)
    answer = pipe.answer("What is 2 + 2?", settings=small(8))
    assert answer.passages == [] and answer.text


def test_concurrent_callers_share_steps_and_get_their_solo_answers(pipe: RAGPipeline) -> None:
    """The CPU default is the batch engine: a question asked while another streams joins its steps."""
    assert pipe.engine.concurrent
    long = RagSettings(llma=LLMAConfig(max_new_tokens=40).greedy(), use_answer_cache=False)
    short = small(12)
    expected = {QUESTIONS[0]: pipe.answer(QUESTIONS[0], settings=long).text,
                QUESTIONS[1]: pipe.answer(QUESTIONS[1], settings=short).text}
    results: dict[str, object] = {}
    first = pipe.stream(QUESTIONS[0], settings=long)
    next(first)  # the first answer is under way
    second = threading.Thread(target=lambda: results.update(b=pipe.answer(QUESTIONS[1], settings=short)))
    second.start()
    results["a"] = [d.answer for d in first if d.answer][-1]
    second.join()
    assert {QUESTIONS[0]: results["a"].text, QUESTIONS[1]: results["b"].text} == expected
    assert results["a"].stats["mean_batch"] > 1 and results["b"].stats["mean_batch"] > 1


def test_the_one_at_a_time_engine_serialises_callers(index: DocumentIndex, loaded: LoadedModel) -> None:
    serial = RAGPipeline(index, loaded, engine_options=EngineOptions(batch_slots=0))
    assert not serial.engine.concurrent
    expected = {q: serial.answer(q, settings=small(12)).text for q in QUESTIONS[:2]}
    results: dict[str, str] = {}

    def ask(q: str) -> None:
        results[q] = serial.answer(q, settings=small(12)).text

    threads = [threading.Thread(target=ask, args=(q,)) for q in QUESTIONS[:2]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == expected


@pytest.mark.parametrize("question", ["", "   \n"])
def test_an_empty_question_is_refused(pipe: RAGPipeline, question: str) -> None:
    with pytest.raises(ValueError, match="question is empty"):
        pipe.answer(question)


def test_a_question_longer_than_the_context_is_refused(pipe: RAGPipeline) -> None:
    settings = RagSettings(llma=LLMAConfig(max_new_tokens=pipe.engine.context_length - 100))
    with pytest.raises(ValueError, match=r"prompt needs \d+ tokens but only 100 fit"):
        pipe.answer("why " * 200, settings=settings)


def test_max_new_tokens_filling_the_context_is_refused(pipe: RAGPipeline) -> None:
    with pytest.raises(ValueError, match="leaves no room"):
        pipe.answer("why?", settings=RagSettings(llma=LLMAConfig(max_new_tokens=pipe.engine.context_length)))


def test_the_pipeline_reports_its_engines_drafting_defaults(pipe: RAGPipeline) -> None:
    """On CPU the batch engine runs: drafts fill its 32-row block (the app's settings show these)."""
    defaults = pipe.draft_defaults
    assert defaults == pipe.engine.draft_defaults
    assert (defaults.min_n, defaults.k, defaults.adaptive, defaults.policy) == (1, 31, False, "longest")
