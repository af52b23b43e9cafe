"""Bad input to the pipeline, the LangChain wrapper and `python -m rag`: a clear ValueError (or a
one-line error and exit code 1), nothing decoded, and the pipeline still answers afterwards."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage

from index import DocumentIndex
from llma import LLMAConfig
from rag import RAGPipeline, RagSettings
from rag.cli import main
from rag.inputs import clean_text
from rag.langchain import IndexRetriever, LLMAChatModel, make_chain
from rag_fixtures import QUESTIONS, small

QUESTION = QUESTIONS[0]


@pytest.mark.parametrize("question, message", [
    ("", "question is empty"),
    (" \n\t ", "question is empty"),
    ("\x00\x01\x1b[31m\x7f", "question is empty"),  # nothing left once control characters go
    (None, r"must be text \(str\), got NoneType"),
    (b"What is a volcano?", "must be text.*got bytes"),
    (42, "must be text.*got int"),
    ("why " * 250_000, r"too long \(1,000,000 characters; the limit is 32,000\)"),  # 1 MB
    ("x1y2 " * 6_000, r"too long: the prompt needs \d+ tokens but only \d+ fit"),  # fits chars, not tokens
])
def test_bad_questions_are_refused(pipe: RAGPipeline, question: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        pipe.answer(question, settings=small())  # type: ignore[arg-type]


def test_control_characters_and_lone_surrogates_are_cleaned_not_fatal(pipe: RAGPipeline) -> None:
    messy = "What is\x00 a\x07 volcano\x1b[1m?\ud800"
    assert clean_text(messy) == "What is a volcano?\ufffd"
    answer = pipe.answer(messy, settings=small(8))
    assert answer.text == pipe.answer("What is a volcano?\ufffd", settings=small(8)).text


@pytest.mark.parametrize("history, message", [
    ("hello", "history must be a list"),
    ({"role": "user", "content": "hi"}, "history must be a list"),
    (["hello"], "history message 0 must be a mapping"),
    ([{"role": "system", "content": "obey"}], "role 'system'; expected 'user' or 'assistant'"),
])
def test_bad_history_is_refused(pipe: RAGPipeline, history: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        pipe.answer(QUESTION, history=history, settings=small())  # type: ignore[arg-type]


def test_a_huge_history_turn_is_dropped_from_the_prompt(pipe: RAGPipeline) -> None:
    history = [{"role": "user", "content": "blah " * 50_000}, {"role": "assistant", "content": "ok"}]
    answer = pipe.answer(QUESTION, history=history, settings=small(6))
    assert answer.stats["prompt_tokens"] < pipe.engine.context_length and answer.text


@pytest.mark.parametrize("settings, message", [
    ({"top_k": -1}, "top_k must be >= 0"),
    ({"top_k": 2.5}, "top_k must be an integer"),
    ({"min_score": math.nan}, "min_score must be a finite number"),
    ({"query_turns": -1}, "query_turns must be >= 0"),
    ({"cache_threshold": 2.0}, "cosine similarity in"),
    ({"stop": ("",)}, "non-empty strings"),
    ({"stop": "###"}, "non-empty strings"),  # one string, not a tuple of them
    ({"llma": {"k": 4}}, "llma must be an LLMAConfig"),
])
def test_bad_rag_settings_are_refused(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RagSettings(**settings)


def test_max_new_tokens_beyond_the_context_is_refused(pipe: RAGPipeline) -> None:
    with pytest.raises(ValueError, match="leaves no room for the prompt"):
        pipe.answer(QUESTION, settings=RagSettings(llma=LLMAConfig(max_new_tokens=10_000)))


def test_out_of_range_retrieval_settings_are_safe(pipe: RAGPipeline, index: DocumentIndex) -> None:
    """More passages than chunks: all chunks; a min_score nothing reaches: no passages, still an answer."""
    many = pipe.answer(QUESTION, settings=small(4, top_k=1000, min_score=None))
    assert len(many.passages) == len(index)
    none = pipe.answer(QUESTION, settings=small(4, min_score=0.99))
    assert none.passages == [] and none.text


@pytest.mark.parametrize("messages, kwargs, message", [
    ([], {}, "no messages to answer"),
    ("hello", {}, "no messages to answer"),
    ([{"role": "wizard", "content": "hi"}], {}, "role 'wizard'"),
    ([{"role": "user"}], {}, "no text content"),
    ([{"role": "user", "content": "  "}], {}, "hold no text"),
    ([{"role": "user", "content": "x " * 20_000}], {}, r"prompt has \d+ tokens but only \d+ fit"),
    ([{"role": "user", "content": "hi"}], {"references": "one text"}, "references must be a list of texts"),
    ([{"role": "user", "content": "hi"}], {"references": ["word " * 1_000_000]}, "far more than the limit"),
    ([{"role": "user", "content": "hi"}], {"stop": "###"}, "non-empty strings"),
])
def test_bad_chat_messages_are_refused(pipe: RAGPipeline, messages: object, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        list(pipe.stream_messages(messages, config=LLMAConfig(max_new_tokens=4), **kwargs))  # type: ignore[arg-type]


def test_langchain_wrapper_refuses_bad_input(pipe: RAGPipeline, index: DocumentIndex) -> None:
    model = LLMAChatModel(pipeline=pipe, llma=LLMAConfig(max_new_tokens=6))
    with pytest.raises(ValueError, match="hold no text"):
        model.invoke([HumanMessage("")])
    with pytest.raises(ValueError, match="far more than the limit"):
        model.invoke([HumanMessage("hi")], references=["word " * 1_000_000])
    chain = make_chain(IndexRetriever(index=index, k=2), model)
    with pytest.raises(ValueError, match="question is empty"):
        chain.invoke("   ")
    with pytest.raises(ValueError, match="k must be positive"):
        IndexRetriever(index=index, k=0).invoke("volcano")
    assert chain.invoke("What is a volcano?").content  # still works afterwards


@pytest.mark.parametrize("args, message", [
    (["", "--no-index"], "question is empty"),
    (["What?", "--no-index", "--max-new-tokens", "0"], "max_new_tokens must be >= 1"),
    (["What?", "--no-index", "--model", "/no/such/model"], "model folder '/no/such/model' does not exist"),
    (["What?", "--no-index", "--device", "tpu"], "unknown device 'tpu'"),
    (["What?", "--no-index", "--dtype", "float7"], "unknown dtype 'float7'"),
    (["What?", "--no-index", "--k", "-2"], "top_k must be >= 0"),
])
def test_cli_reports_bad_input_in_one_line(capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    code = main(["ask", *args])
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert pytest.importorskip("re").search(message, err), err


def test_cli_reports_a_corrupt_index(capsys: pytest.CaptureFixture[str], index_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    for path in index_dir.iterdir():
        (broken / path.name).write_bytes(path.read_bytes()[: 50 if path.suffix == ".faiss" else None])
    code = main(["ask", "What is a volcano?", "--index", str(broken)])
    err = capsys.readouterr().err
    assert code == 1 and "corrupt (checksum mismatch)" in err and "python -m index build" in err
