"""Upload checks: type and size limits, safe names, copying into docs/uploads/."""
from ui.uploads import ALLOWED_SUFFIXES, UPLOADS_SUBDIR, safe_name, save_uploads


def test_safe_name_keeps_suffix_and_drops_folders():
    assert safe_name("../../etc/passwd.md") == "passwd.md"
    assert safe_name("C:\\x\\My Notes (1).TXT") == "My_Notes_1.txt"
    assert safe_name("<script>.md") == "script.md"
    assert safe_name("...md") == "document.md"


def test_save_uploads_accepts_supported_rejects_the_rest(tmp_path):
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
    docs = tmp_path / "docs"
    result = save_uploads([str(ok), str(bad), str(big), str(empty), str(src / "gone.md")], docs,
                          max_bytes=1024)
    assert result.saved == ["notes.md"]
    assert (docs / UPLOADS_SUBDIR / "notes.md").read_text() == "# Notes\nhello"
    reasons = dict(result.rejected)
    assert "unsupported file type '.exe'" in reasons["program.exe"]
    assert all(s in reasons["program.exe"] for s in ALLOWED_SUFFIXES)
    assert "too large" in reasons["big.txt"]
    assert "empty" in reasons["empty.txt"]
    assert "cannot read" in reasons["gone.md"]
    message = result.message()
    assert "Added: notes.md" in message and "Not added: program.exe" in message


def test_nothing_uploaded():
    assert save_uploads(None, "/nonexistent").message() == "No files were uploaded."
