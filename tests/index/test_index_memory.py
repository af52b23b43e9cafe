"""MemoryIndex: a session's uploads, in memory: add, replace, remove, search by vector."""
from __future__ import annotations

from pathlib import Path

import pytest

from index import IndexingError, MemoryIndex


def test_add_search_replace_remove(tmp_path: Path, embedder, make_pdf, corpus: Path) -> None:
    docs = MemoryIndex(embedder)
    cats, bread = corpus / "cats.md", tmp_path / "b"
    bread.write_bytes(make_pdf("Knead the dough and let the yeast make it rise before baking"))
    progress: list[tuple[int, int]] = []
    assert docs.add_file(cats, "cats.md", on_progress=lambda *p: progress.append(p)) == 1
    assert progress[-1] == (1, 1)
    docs.add_file(bread, "bread.pdf")
    assert docs.names == ["cats.md", "bread.pdf"] and len(docs) == 2
    hits = docs.search_vector(embedder.embed(["How long do cats sleep?"])[0], k=2)
    assert [h.chunk.source for h in hits] == ["cats.md", "bread.pdf"] and hits[0].score > hits[1].score
    assert docs.search_vector(embedder.embed(["How long do cats sleep?"])[0], k=2, min_score=hits[0].score) == hits[:1]
    dogs = tmp_path / "c"
    dogs.write_text("Dogs bark at the postman.", encoding="utf-8")
    docs.add_file(dogs, "cats.md")  # the same name again replaces the document
    assert docs.chunk_counts() == {"bread.pdf": 1, "cats.md": 1}
    assert "cats" not in docs.search_vector(embedder.embed(["cats"])[0], k=1)[0].chunk.text.lower()
    assert docs.remove("cats.md") and not docs.remove("cats.md")
    assert docs.names == ["bread.pdf"]
    docs.remove("bread.pdf")
    assert docs.search_vector(embedder.embed(["cats"])[0], k=3) == []


@pytest.mark.parametrize("name, content, reason", [
    ("x.exe", b"MZ", "unsupported file type '.exe'"),
    ("e.md", b"", "empty"),
    ("blank.txt", b"  \n ", "no extractable text"),
    ("big.txt", b"x" * 2048, "too large"),
])
def test_unusable_files_are_refused_with_the_reason(tmp_path: Path, embedder, name, content, reason) -> None:
    path = tmp_path / "upload"
    path.write_bytes(content)
    docs = MemoryIndex(embedder)
    with pytest.raises(IndexingError, match=reason):
        docs.add_file(path, name, max_bytes=1024)
    with pytest.raises(IndexingError, match="unreadable"):
        docs.add_file(tmp_path / "missing", "missing.md")
    assert docs.names == []
