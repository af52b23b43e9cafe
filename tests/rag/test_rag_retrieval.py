"""Issue #24, retrieval: the query follows the conversation, unrelated passages are not given to
the model (and the answer says so), uploads are private to the session that made them."""
from __future__ import annotations

from pathlib import Path

import pytest

from index import DocumentIndex, IndexingError
from llma import LoadedModel
from rag import RAGPipeline
from rag.prompt import SYSTEM_PLAIN, SYSTEM_WITH_PASSAGES, Turn
from rag.retrieval import conversation_query
from rag.types import DEFAULT_MIN_SCORE
from rag_fixtures import small

DICT_Q = "Do dictionaries preserve insertion order?"
ZORBLAX = ("# Zorblax widgets\n\nThe zorblax widget is calibrated every Tuesday with a brass "
           "quintometer, which keeps its flux within three percent.\n")
ZORBLAX_Q = "How is the zorblax widget calibrated?"


@pytest.fixture(scope="module")
def fresh(index: DocumentIndex, loaded: LoadedModel) -> RAGPipeline:
    return RAGPipeline(index, loaded)


def history(*questions: str) -> list[dict[str, str]]:
    return [m for q in questions for m in ({"role": "user", "content": q},
                                           {"role": "assistant", "content": "An answer."})]


def sources(request) -> list[str]:
    return [p.source for p in request.passages]


def test_conversation_query_puts_the_question_first_then_recent_user_turns() -> None:
    turns = [Turn(0, "user", "first?"), Turn(1, "assistant", "A."), Turn(2, "user", "second?"),
             Turn(3, "assistant", "B."), Turn(4, "user", " third? ")]
    assert conversation_query("now?", turns, 2) == "now?\nthird?\nsecond?"
    assert conversation_query("now?", turns, 0) == "now?"
    assert conversation_query("now?", [], 2) == "now?"


@pytest.mark.parametrize("follow_up", ["Tell me more about it.", "What did I just ask you?"])
def test_a_follow_up_retrieves_with_the_conversation(fresh: RAGPipeline, follow_up: str) -> None:
    alone = fresh.prepare(follow_up, settings=small(8))
    assert "dict.md" not in sources(alone)  # the follow-up alone has no subject
    followed = fresh.prepare(follow_up, history(DICT_Q), small(8))
    assert sources(followed)[0] == "dict.md"
    off = fresh.prepare(follow_up, history(DICT_Q), small(8, query_turns=0))
    assert sources(off) == sources(alone)


def test_a_new_subject_is_retrieved_for_itself(fresh: RAGPipeline) -> None:
    switched = fresh.prepare("What is a volcano?", history(DICT_Q), small(8))
    assert sources(switched)[0] == "volcano.txt"


def test_unrelated_passages_are_not_given_and_the_answer_says_so(fresh: RAGPipeline) -> None:
    question = "Who painted the Mona Lisa?"
    assert small().min_score == DEFAULT_MIN_SCORE
    scores = [h.score for h in fresh.index.search(question, k=3)]
    assert scores and max(scores) < DEFAULT_MIN_SCORE  # all unrelated
    request = fresh.prepare(question, settings=small(8))
    assert request.passages == []
    text = fresh.tokenizer.decode(request.prompt_ids)
    assert SYSTEM_PLAIN in text and SYSTEM_WITH_PASSAGES not in text and "Passages:" not in text
    answer = fresh.answer(question, settings=small(6))
    assert answer.passages == [] and answer.text
    assert answer.notice.startswith(f"No passage of the documents scored {DEFAULT_MIN_SCORE:.2f}")
    # Without a threshold every hit is given, as before; a relevant question has no notice.
    assert len(fresh.prepare(question, settings=small(8, min_score=None)).passages) == 3
    relevant = fresh.answer(DICT_Q, settings=small(4))
    assert relevant.passages and relevant.notice == ""


def test_uploads_are_searchable_in_their_own_session_only(fresh: RAGPipeline, tmp_path: Path) -> None:
    doc = tmp_path / "upload.tmp"
    doc.write_text(ZORBLAX, encoding="utf-8")
    assert fresh.add_document("alice", doc, "zorblax.md") >= 1
    assert fresh.documents("alice") == {"zorblax.md": 1} and fresh.documents("bob") == {}
    mine = fresh.prepare(ZORBLAX_Q, settings=small(8), session="alice")
    assert sources(mine)[0] == "upload: zorblax.md" and "quintometer" in mine.passages[0].text
    for other in ("bob", None):
        theirs = fresh.prepare(ZORBLAX_Q, settings=small(8), session=other)
        assert all("zorblax" not in p.source and "quintometer" not in p.text for p in theirs.passages)
        assert "quintometer" not in fresh.tokenizer.decode(theirs.prompt_ids)
    answer = fresh.answer(ZORBLAX_Q, settings=small(8), session="alice")
    assert answer.passages[0].source == "upload: zorblax.md"

    assert fresh.remove_document("alice", "zorblax.md") and not fresh.remove_document("alice", "zorblax.md")
    assert fresh.documents("alice") == {}
    assert "upload: zorblax.md" not in sources(fresh.prepare(ZORBLAX_Q, settings=small(8), session="alice"))
    fresh.add_document("alice", doc, "zorblax.md")
    fresh.forget_session("alice")
    assert fresh.documents("alice") == {}
    assert "upload: zorblax.md" not in sources(fresh.prepare(ZORBLAX_Q, settings=small(8), session="alice"))


def test_bad_uploads_are_refused_with_the_reason(fresh: RAGPipeline, tmp_path: Path) -> None:
    empty = tmp_path / "empty.md"
    empty.write_text("   \n", encoding="utf-8")
    with pytest.raises(IndexingError, match="empty.md: no extractable text"):
        fresh.add_document("carol", empty, "empty.md")
    with pytest.raises(IndexingError, match="unsupported file type '.exe'"):
        fresh.add_document("carol", empty, "tool.exe")
    with pytest.raises(ValueError, match="needs a session"):
        fresh.add_document(None, empty, "x.md")  # type: ignore[arg-type]
    assert fresh.documents("carol") == {}


def test_uploads_work_without_an_operator_index(loaded: LoadedModel, tmp_path: Path) -> None:
    pipe = RAGPipeline(None, loaded)
    doc = tmp_path / "z.md"
    doc.write_text(ZORBLAX, encoding="utf-8")
    assert pipe.prepare(ZORBLAX_Q, settings=small(8), session="dan").passages == []
    pipe.add_document("dan", doc, "zorblax.md")
    assert sources(pipe.prepare(ZORBLAX_Q, settings=small(8), session="dan")) == ["upload: zorblax.md"]
