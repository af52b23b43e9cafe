"""Uploads (issue #24): checks, safe names, indexing for the uploading session only, the list of
one's uploads with removal, progress and the refreshed status line; model-free (a fake pipeline)."""
from __future__ import annotations

import pytest
from gradio_client import handle_file

from test_app_handlers import Harness
from ui.uploads import (ALLOWED_SUFFIXES, PRIVACY_NOTE, add_uploads, remove_uploads, safe_name,
                        status_line)
from app_fakes import FakePipeline


def test_safe_name_keeps_suffix_and_drops_folders():
    assert safe_name("../../etc/passwd.md") == "passwd.md"
    assert safe_name("C:\\x\\My Notes (1).TXT") == "My_Notes_1.txt"
    assert safe_name("<script>.md") == "script.md"
    assert safe_name("...md") == "document.md"


def test_add_uploads_indexes_supported_files_for_the_session_and_rejects_the_rest(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    ok = src / "notes.md"
    ok.write_text("# Notes\nhello")
    bad = src / "program.exe"
    bad.write_bytes(b"MZ")
    big = src / "big.txt"
    big.write_bytes(b"x" * 2048)
    empty = src / "empty.txt"
    empty.write_bytes(b"")
    blank = src / "blank.md"
    blank.write_text("   ")
    pipe, progress = FakePipeline(), []
    result = add_uploads(pipe, "s1", [str(p) for p in (ok, bad, big, empty, src / "gone.md", blank)],
                         progress=lambda fraction, desc: progress.append((fraction, desc)),
                         max_bytes=1024)
    assert result.saved == ["notes.md"] and pipe.documents("s1") == {"notes.md": 2}
    assert pipe.documents("s2") == {}  # another session has nothing
    reasons = dict(result.rejected)
    assert "unsupported file type '.exe'" in reasons["program.exe"]
    assert all(s in reasons["program.exe"] for s in ALLOWED_SUFFIXES)
    assert "too large" in reasons["big.txt"] and "empty" in reasons["empty.txt"]
    assert "cannot read" in reasons["gone.md"]
    assert reasons["blank.md"] == "no extractable text"  # the indexer's own reason
    message = result.message()
    assert "Added: notes.md (2 chunks)" in message and "Not added: program.exe" in message
    assert "this session only" in message
    assert progress and progress[-1] == (1 / 6, "Indexing notes.md: embedding chunks 2/2")
    assert [f for f, _ in progress] == sorted(f for f, _ in progress)
    assert not list(tmp_path.glob("**/uploads"))  # nothing is saved to a shared folder


def test_nothing_uploaded_and_removing():
    pipe = FakePipeline()
    assert add_uploads(pipe, "s", None).message() == "No files were uploaded."
    pipe.uploads["s"] = {"a.md": 1, "b.md": 3}
    assert remove_uploads(pipe, "s", ["a.md", "zz.md"]) == "Removed: a.md"
    assert remove_uploads(pipe, "s", []).startswith("Nothing was removed")
    assert status_line("Ready. Index: 9 chunks", pipe.documents("s")) == \
        "Ready. Index: 9 chunks · Your uploads: 1 document, 3 chunks (this session only)."
    assert status_line("Ready.", {}) == "Ready."


def choices(update) -> list[str]:
    """The names listed by a CheckboxGroup update (gradio sends [label, value] pairs)."""
    return [c[1] if isinstance(c, (list, tuple)) else c for c in update["choices"]]


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    h = Harness(tmp_path_factory.mktemp("uploads"))
    yield h
    h.close()


def test_upload_list_remove_per_session_through_the_app(harness, tmp_path):
    good, bad = tmp_path / "notes.md", tmp_path / "tool.exe"
    good.write_text("# Notes\nzorblax")
    bad.write_bytes(b"MZ")
    alice, bob = harness.client(), harness.client()  # two clients: two Gradio sessions
    message, files, listing, status = alice.predict(
        [handle_file(str(good)), handle_file(str(bad))], api_name="/add_documents")
    assert "Added: notes.md (2 chunks)" in message and "Index updated:" in message
    assert "Not added: tool.exe: unsupported file type '.exe'" in message
    assert files is None and choices(listing) == ["notes.md"] and listing["value"] == []
    assert status.startswith("Ready. Index:") and "Your uploads: 1 document, 2 chunks" in status
    (session, docs), = harness.pipe.uploads.items()
    assert docs == {"notes.md": 2}
    assert not (harness.service.docs_dir / "uploads").exists()  # never in the shared folder

    message, listing, status = bob.predict([], api_name="/remove_documents")
    assert message.startswith("Nothing was removed") and "Your uploads" not in status
    assert choices(listing) == []  # Bob's list is his own: empty
    with pytest.raises(Exception, match="not in the list of choices"):  # not Bob's to remove
        bob.predict(["notes.md"], api_name="/remove_documents")
    assert harness.pipe.uploads[session] == {"notes.md": 2}
    message, listing, status = alice.predict(["notes.md"], api_name="/remove_documents")
    assert message == "Removed: notes.md" and "Your uploads" not in status and choices(listing) == []
    assert harness.pipe.uploads[session] == {}


def test_privacy_note_says_uploads_are_private():
    assert "this browser tab only" in PRIVACY_NOTE and "not saved" in PRIVACY_NOTE
