"""The demo corpus in data/: well formed, and its example questions answerable."""
from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from index import build_index, load_index  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "data"
DOCS = DATA / "docs"
QUESTIONS = json.loads((DATA / "questions.json").read_text(encoding="utf-8"))


def _flat(text: str) -> str:
    """Whitespace-normalised, since the answers may span a wrapped line."""
    return " ".join(text.split())


def test_corpus_shape():
    docs = sorted(DOCS.glob("*.md"))
    assert len(docs) >= 50
    for doc in docs:
        first, blank, *_ = doc.read_text(encoding="utf-8").splitlines()
        assert first.startswith("# ") and len(first) > 4 and blank == "", doc.name
    assert (DATA / "LICENSE-PSF.txt").read_text().count("Python Software Foundation") > 3
    assert len(QUESTIONS) == 10


@pytest.mark.parametrize("q", QUESTIONS, ids=[q["source"] for q in QUESTIONS])
def test_answer_occurs_in_its_document(q):
    assert _flat(q["answer"]) in _flat((DOCS / q["source"]).read_text(encoding="utf-8"))


@pytest.mark.slow
def test_questions_retrieve_their_source(tmp_path, embedder):
    build_index(DOCS, tmp_path / "idx", embedder=embedder, progress=False)
    index = load_index(tmp_path / "idx", embedder=embedder)
    misses = []
    for q in QUESTIONS:
        sources = [hit.chunk.source for hit in index.search(q["question"], k=5)]
        if q["source"] not in sources:
            misses.append((q["question"], q["source"], sources))
    recall = 1 - len(misses) / len(QUESTIONS)
    print(f"recall@5 on data/questions.json: {recall:.0%}")
    assert not misses, misses
