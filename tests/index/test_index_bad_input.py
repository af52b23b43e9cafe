"""Bad input to the index package that the ingest and store tests do not already cover: huge files,
paths that are files, embedders that cannot load, and builds that fail over a good index (which must
keep its previous content)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from index import (EmbedderNotFoundError, IndexingError, IndexMissingError, NoDocumentsError,
                   build_index, load_index)
from index.cli import main


@pytest.fixture
def idx(corpus: Path, tmp_path: Path, embedder) -> Path:
    build_index(corpus, tmp_path / "idx", embedder=embedder, progress=False)
    return tmp_path / "idx"


def _content(index_dir: Path) -> tuple[list[str], list[str]]:
    index = load_index(index_dir)
    return index.sources, [c.id for c in index.chunks]


def test_a_200_mb_file_is_skipped_unread(corpus: Path, tmp_path: Path, embedder) -> None:
    huge = corpus / "huge.txt"
    with huge.open("wb") as fh:  # sparse: 200 MB on paper, nothing written to disk
        fh.truncate(200 * 2**20)
    started = time.monotonic()
    report = build_index(corpus, tmp_path / "idx", embedder=embedder, progress=False)
    assert time.monotonic() - started < 60  # not read, not embedded
    assert {s.path: s.reason for s in report.skipped} == {"huge.txt": "too large (200.0 MB; the limit is 50 MB)"}
    assert "huge.txt" not in load_index(tmp_path / "idx").sources and len(report.added) == 3


def test_the_size_limit_is_a_setting(corpus: Path, tmp_path: Path, embedder) -> None:
    limit = (corpus / "notes" / "bread.html").stat().st_size - 1  # the largest file of the corpus
    report = build_index(corpus, tmp_path / "idx", embedder=embedder, progress=False, max_file_bytes=limit)
    assert [(s.path, s.reason.split(" (")[0]) for s in report.skipped] == [("notes/bread.html", "too large")]


def test_an_index_path_that_is_a_file(corpus: Path, tmp_path: Path, embedder) -> None:
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not an index")
    with pytest.raises(IndexMissingError, match="is a file, not an index folder"):
        load_index(a_file)
    with pytest.raises(IndexingError, match="is a file; pass a folder"):
        build_index(corpus, a_file, embedder=embedder, progress=False)
    assert a_file.read_text() == "not an index"  # untouched


def test_an_embedder_that_cannot_load_offline(corpus: Path, tmp_path: Path) -> None:
    with pytest.raises(EmbedderNotFoundError, match="cannot load embedder 'nobody/no-such-embedder'.*offline"):
        build_index(corpus, tmp_path / "idx", embedder="nobody/no-such-embedder", progress=False)
    assert not (tmp_path / "idx" / "manifest.json").exists()


def test_a_manifest_naming_an_unavailable_embedder(idx: Path) -> None:
    """A manifest written by another installation: loading works, searching says what is missing."""
    manifest = json.loads((idx / "manifest.json").read_text())
    manifest["embedder"] = "someone/other-embedder"
    (idx / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EmbedderNotFoundError, match="cannot load embedder 'someone/other-embedder'"):
        load_index(idx).search("volcano")


@pytest.mark.parametrize("break_docs", ["delete", "empty", "only_bad_files"])
def test_a_failed_rebuild_keeps_the_previous_index(corpus: Path, idx: Path, embedder, break_docs: str) -> None:
    before = _content(idx)
    for path in sorted(corpus.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    if break_docs == "delete":
        corpus.rmdir()
    elif break_docs == "only_bad_files":
        (corpus / "zero.txt").write_bytes(b"")
        (corpus / "fake.pdf").write_bytes(b"not a pdf")
        (corpus / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(NoDocumentsError):
        build_index(corpus, idx, embedder=embedder, progress=False)
    assert _content(idx) == before


def test_documents_with_control_characters_and_odd_names_index(tmp_path: Path, embedder) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "weird name é ✓ (1).md").write_text("# Odd\x07 name\n\nGlaciers\x0b are slow rivers of ice.\x1b[0m")
    build_index(docs, tmp_path / "idx", embedder=embedder, progress=False)
    [hit] = load_index(tmp_path / "idx").search("glaciers ice", k=1)
    assert hit.chunk.source == "weird name é ✓ (1).md"


def test_cli_bad_input_is_one_line_and_exit_1(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a_file").write_text("x")
    cases = [(["build", str(corpus), "--out", str(tmp_path / "a_file")], "is a file"),
             (["build", str(corpus), "--out", str(tmp_path / "i"), "--chunk-size", "0"], "chunk_size > 0"),
             (["search", str(tmp_path / "a_file"), "query"], "is a file, not an index folder")]
    for argv, message in cases:
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
