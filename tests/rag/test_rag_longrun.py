"""Short version of `python -m reliability.longrun` (500 questions): many consecutive answers from
one pipeline; none fails, the KV cache never holds more than the last answer, the answer cache stays
within its capacity and memory does not keep growing."""
from __future__ import annotations

import pytest

from rag import RAGPipeline
from rag_fixtures import QUESTIONS, small
from reliability.longrun import growth, longest_inputs, run_questions

VARIANTS = ["{}", "Please answer: {}", "{} Answer briefly.", "Quick question. {}", "{} Thanks!"]


@pytest.mark.slow
def test_thirty_consecutive_questions_leak_nothing(pipe: RAGPipeline) -> None:
    questions = [v.format(q) for v in VARIANTS for q in QUESTIONS] * 2  # 30, repeats hit the cache
    result = run_questions(pipe, questions, small(6, use_answer_cache=True), gc_every=10)
    assert result.failed == [] and result.incomplete == 0 and result.answered == 30
    for s in result.samples[1:]:
        if pipe.engine.concurrent:  # the batch engine frees a finished answer's cache slot
            assert s.kv_tokens == 0
        else:  # the one-at-a-time engine holds only the last answer's tokens
            assert 0 < s.kv_tokens <= s.answer_tokens
        assert s.answer_cache <= pipe.caches.capacity
    rss = growth([(s.question, s.rss_mb) for s in result.samples])
    assert rss["second_half_growth_mb"] < 100  # loose: allocator noise on a short run


def test_the_warm_up_asks_the_longest_prompt_and_the_longest_question(pipe: RAGPipeline) -> None:
    settings = small(6)
    questions = [QUESTIONS[0], QUESTIONS[1] + " " + "Please be precise. " * 20, QUESTIONS[2]]
    warm, tokens = longest_inputs(pipe, questions, settings)
    assert warm == [questions[1]]  # both the longest prompt and the longest text: asked once
    assert tokens == len(pipe.prepare(questions[1], settings=settings).prompt_ids)
    assert tokens > max(len(pipe.prepare(q, settings=settings).prompt_ids) for q in (questions[0], questions[2]))
