"""Text extraction per file type, and skipping of files that cannot be used."""
from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from index import NoDocumentsError, build_index  # noqa: E402
from index.ingest import UnreadableFile, extract, iter_files, load_source, readers  # noqa: E402
from index.types import Document  # noqa: E402


def _docs(root: Path, rel: str, text_field: str = "text") -> list[Document]:
    path = root / rel
    return extract(load_source(path, root), readers(text_field)[path.suffix.lower()])


def test_txt_title_is_file_stem(tmp_path, write_files):
    write_files(tmp_path, {"sub/notes.txt": "plain words\nsecond line"})
    [doc] = _docs(tmp_path, "sub/notes.txt")
    assert (doc.source, doc.title, doc.text) == ("sub/notes.txt", "notes", "plain words\nsecond line")


def test_markdown_title_is_first_heading(tmp_path, write_files):
    write_files(tmp_path, {"a.md": "intro line\n\n## The Real Title ##\n\n# Later\ntext"})
    [doc] = _docs(tmp_path, "a.md")
    assert doc.title == "The Real Title"
    assert doc.text.startswith("intro line")


def test_markdown_with_bom_and_no_heading(tmp_path, write_files):
    write_files(tmp_path, {"b.md": "\ufeffjust text".encode("utf-8")})
    [doc] = _docs(tmp_path, "b.md")
    assert (doc.title, doc.text) == ("b", "just text")


def test_html_drops_scripts_and_styles_and_uses_title(tmp_path, write_files):
    html = ("<html><head><title> My Page </title><style>.x{color:red}</style>"
            "<script>alert('boo')</script></head><body><h1>Head</h1><p>Body text.</p>"
            "<script>var hidden = 42;</script><noscript>enable js</noscript></body></html>")
    write_files(tmp_path, {"page.HTM": html})
    [doc] = _docs(tmp_path, "page.HTM")
    assert doc.title == "My Page"
    assert "Head" in doc.text and "Body text." in doc.text
    for dropped in ("alert", "hidden", "color:red", "enable js"):
        assert dropped not in doc.text


def test_html_without_title_uses_stem(tmp_path, write_files):
    write_files(tmp_path, {"bare.html": "<p>hello</p>"})
    [doc] = _docs(tmp_path, "bare.html")
    assert (doc.title, doc.text) == ("bare", "hello")


def test_pdf_text_is_extracted(tmp_path, write_files, make_pdf):
    write_files(tmp_path, {"paper.pdf": make_pdf("Photosynthesis converts light into energy")})
    [doc] = _docs(tmp_path, "paper.pdf")
    assert doc.title == "paper"
    assert "Photosynthesis converts light into energy" in doc.text


def test_jsonl_one_document_per_line_with_custom_field(tmp_path, write_files):
    lines = [{"body": "first doc", "title": "One"}, {"body": "second doc"},
             {"other": "no body field"}, {"body": "   "}]
    text = "\n".join(json.dumps(r) for r in lines) + "\nnot json at all\n\n"
    write_files(tmp_path, {"recs.jsonl": text})
    docs = _docs(tmp_path, "recs.jsonl", text_field="body")
    assert [(d.title, d.text) for d in docs] == [("One", "first doc"), ("recs #2", "second doc")]
    assert all(d.source == "recs.jsonl" for d in docs)


@pytest.mark.parametrize("rel, content, reason", [
    ("empty.txt", b"", "empty file"),
    ("binary.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary"),
    ("latin1.md", "caf\u00e9 cr\u00e8me".encode("latin-1"), "not valid UTF-8"),
    ("fake.pdf", b"this is not a pdf, only a text file named .pdf", "invalid PDF"),
    ("blank.txt", b"  \n\n\t ", "no extractable text"),
    ("nulls.html", b"<p>\x00\x00</p>", "binary"),
])
def test_bad_files_raise_unreadable(tmp_path, write_files, rel, content, reason):
    write_files(tmp_path, {rel: content})
    with pytest.raises(UnreadableFile, match=reason):
        _docs(tmp_path, rel)


def test_iter_files_skips_hidden_entries_and_the_index_folder(tmp_path, write_files):
    write_files(tmp_path, {"a.txt": "a", ".hidden.txt": "h", ".git/x.txt": "g",
                           "idx/chunks-1.jsonl": "{}", "sub/b.md": "b"})
    found = [p.relative_to(tmp_path).as_posix() for p in iter_files(tmp_path, exclude=tmp_path / "idx")]
    assert found == ["a.txt", "sub/b.md"]


def test_build_skips_and_lists_bad_files(tmp_path, write_files, make_pdf, embedder):
    docs = write_files(tmp_path / "docs", {
        "good.txt": "Glaciers are slow rivers of ice.",
        "paper.pdf": make_pdf("Tides are caused by the Moon"),
        "empty.txt": b"",
        "binary.md": b"\x00\x01\x02\x03",
        "latin1.txt": "na\u00efve".encode("latin-1"),
        "fake.pdf": b"%PDF-1.4 but truncated garbage",
        "image.png": b"\x89PNG",
    })
    (docs / "dangling.txt").symlink_to(docs / "does-not-exist.txt")
    report = build_index(docs, tmp_path / "idx", embedder=embedder, progress=False)
    assert sorted(report.added) == ["good.txt", "paper.pdf"]
    reasons = {s.path: s.reason for s in report.skipped}
    assert sorted(reasons) == ["binary.md", "dangling.txt", "empty.txt", "fake.pdf", "image.png",
                               "latin1.txt"]
    assert "unreadable" in reasons["dangling.txt"] and "unsupported" in reasons["image.png"]


def test_build_on_empty_or_missing_folder_raises(tmp_path, write_files, embedder):
    with pytest.raises(NoDocumentsError, match="does not exist"):
        build_index(tmp_path / "nope", tmp_path / "idx", embedder=embedder, progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(NoDocumentsError, match="no supported documents found in"):
        build_index(tmp_path / "empty", tmp_path / "idx", embedder=embedder, progress=False)
    write_files(tmp_path / "bad", {"zero.txt": b"", "x.pdf": b"nope"})
    with pytest.raises(NoDocumentsError, match=r"no supported documents found in .*2 files skipped"):
        build_index(tmp_path / "bad", tmp_path / "idx", embedder=embedder, progress=False)
    assert not (tmp_path / "idx" / "manifest.json").exists()

