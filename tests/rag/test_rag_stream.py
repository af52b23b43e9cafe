"""Streaming: deltas add up to the answer, spans only cover text already sent, partial characters
and stop-string prefixes are held back."""
from __future__ import annotations

from rag_fixtures import QUESTIONS, small
from llma import OUTPUT_REF, CopiedSpan, LLMAConfig, LoadedModel, StepEvent
from rag import RAGPipeline
from rag.generation import Request, _Run
from rag.references import alone
from rag.textspans import AnswerText, to_text_span
from rag.types import AnswerDelta, SourceText

SOURCE = SourceText("passage:1", "passage", "Le café près de 日本語 est ouvert.", "[1] Café")


def events(token_groups: list[list[int]], copied: dict[int, CopiedSpan]) -> list[StepEvent]:
    last = len(token_groups) - 1
    return [StepEvent(i, tuple(g), len(g) - 1 if i in copied else 0, len(g) - 1 if i in copied else 0,
                      copied.get(i), 0.1 * (i + 1), 0.1, i == last, "eos" if i == last else None)
            for i, g in enumerate(token_groups)]


def replay(loaded: LoadedModel, groups: list[list[int]], copied: dict[int, CopiedSpan], stop: tuple[str, ...] = ()) -> list[AnswerDelta]:
    ref = alone(loaded.tokenizer, SOURCE)
    assert ref is not None
    run = _Run(loaded.tokenizer, Request([1, 2, 3], {SOURCE.id: ref}, LLMAConfig(), stop))
    return [run.step(e) for e in events(groups, copied)]


def test_partial_characters_are_held_back(loaded: LoadedModel) -> None:
    ids = loaded.tokenizer(SOURCE.text, add_special_tokens=False)["input_ids"]
    # One token per step: multi-byte characters arrive in pieces.
    deltas = replay(loaded, [[t] for t in ids], {})
    sent = ""
    for delta in deltas:
        sent += delta.text
        assert "\ufffd" not in sent
    assert sent == SOURCE.text and deltas[-1].answer is not None and deltas[-1].answer.text == SOURCE.text


def test_copied_runs_become_character_spans_that_grow(loaded: LoadedModel) -> None:
    ids = loaded.tokenizer(SOURCE.text, add_special_tokens=False)["input_ids"]
    # Step 0 the prefill (1 token); step 1 copies tokens 1..3 then adds token 4; step 2 copies 5..7 + 8.
    groups = [ids[:1], ids[1:5], ids[5:9], ids[9:]]
    copied = {1: CopiedSpan(SOURCE.id, 1, 4, 1, 4), 2: CopiedSpan(SOURCE.id, 5, 8, 5, 8)}
    deltas = replay(loaded, groups, copied)
    answer = deltas[-1].answer
    assert answer is not None and answer.text == SOURCE.text
    assert len(answer.spans) == 1  # the model's own token 4 matches the source: one run
    span = answer.spans[0]
    assert answer.text[span.start:span.end] == SOURCE.text[span.source_start:span.source_end]
    sent = ""
    for delta in deltas:
        sent += delta.text
        assert all(s.end <= len(sent) for s in delta.spans)
    assert [s.start for d in deltas for s in d.spans] == [span.start, span.start]  # sent, then grown


def test_copies_from_the_answer_itself_become_spans_and_steps_name_their_source(loaded: LoadedModel) -> None:
    """Issue #24: tokens copied from the answer's own earlier words (reference "output") are a
    span of kind "output" over the repeated text, and each step says what it copied from, so the
    page's counts and highlights agree."""
    ids = loaded.tokenizer("The cat sat on the mat.", add_special_tokens=False)["input_ids"]
    n = len(ids)
    copied = {1: CopiedSpan(OUTPUT_REF, 0, n - 1, n, 2 * n - 1)}
    deltas = replay(loaded, [ids, ids], copied)
    answer = deltas[-1].answer
    assert answer.text == "The cat sat on the mat." * 2
    [span] = answer.spans
    assert (span.source_kind, span.source_id) == ("output", "output")
    assert answer.text[span.start:span.end] == answer.text[span.source_start:span.source_end]
    assert span.start == len("The cat sat on the mat.") and span.source_start == 0
    assert [s["source"] for s in answer.steps] == [None, "output"]
    assert sum(s["accepted"] for s in answer.steps if s["source"] == "output") == n - 1


def test_a_copy_of_only_spaces_is_counted_as_blank_not_as_a_span(loaded: LoadedModel) -> None:
    """A copied line break has nothing to highlight: no span, and its step says "blank"."""
    tok = loaded.tokenizer
    cat, dog = (tok(t, add_special_tokens=False)["input_ids"] for t in ("The cat.", "The dog."))
    [nl] = tok("\n\n", add_special_tokens=False)["input_ids"]
    first = cat + [nl] + dog
    copied = {1: CopiedSpan(OUTPUT_REF, len(cat), len(cat) + 1, len(first), len(first) + 1)}
    deltas = replay(loaded, [first, [nl] + dog[:1]], copied)
    answer = deltas[-1].answer
    assert answer.spans == [] and [s["source"] for s in answer.steps] == [None, "blank"]


def test_stop_string_prefixes_are_not_sent_early(loaded: LoadedModel) -> None:
    ids = loaded.tokenizer(SOURCE.text, add_special_tokens=False)["input_ids"]
    deltas = replay(loaded, [[t] for t in ids], {}, stop=("est ouvert",))
    text = "".join(d.text for d in deltas)
    assert text == SOURCE.text[:SOURCE.text.index("est ouvert")]
    assert deltas[-1].done and deltas[-1].answer is not None and deltas[-1].answer.stop_reason == "stop_string"


def test_char_positions_skip_partial_characters(loaded: LoadedModel) -> None:
    tok = loaded.tokenizer
    answer = AnswerText(tok)
    answer.extend(tok("日本", add_special_tokens=False)["input_ids"])
    assert answer.char_at(len(answer.tokens)) == 2 and answer.char_at(1) in (0, 1)
    ref = alone(tok, SourceText("cache:0", "cache", "日本", "c"))
    assert ref is not None
    span = to_text_span(CopiedSpan("cache:0", 0, len(ref.token_ids), 0, len(answer.tokens)), answer, ref)
    assert span is not None and (span.start, span.end, span.source_start, span.source_end) == (0, 2, 0, 2)


def test_real_stream_adds_up_to_the_answer(pipe: RAGPipeline) -> None:
    deltas = list(pipe.stream(QUESTIONS[0], settings=small(24)))
    assert deltas[0].passages and all(d.passages is None for d in deltas[1:])
    assert [d.done for d in deltas] == [False] * (len(deltas) - 1) + [True]
    answer = deltas[-1].answer
    assert answer is not None and "".join(d.text for d in deltas) == answer.text
    latest = {}
    for delta in deltas:
        latest.update({s.start: s for s in delta.spans})
    assert sorted(latest.values(), key=lambda s: s.start) == answer.spans
