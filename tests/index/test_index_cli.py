"""`python -m index build|search` as a user runs it."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
       "TOKENIZERS_PARALLELISM": "false"}


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "index", *args], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_build_then_search(corpus, tmp_path):
    (corpus / "junk.pdf").write_bytes(b"not a pdf")
    out = tmp_path / "idx"
    built = _cli("build", str(corpus), "--out", str(out), "--chunk-size", "100",
                 "--chunk-overlap", "10")
    assert built.returncode == 0, built.stderr
    assert "3 added" in built.stdout and "skipped junk.pdf: invalid PDF" in built.stdout
    assert "reading" in built.stderr  # tqdm progress bar

    found = _cli("search", str(out), "How long do cats sleep?", "-k", "2")
    assert found.returncode == 0, found.stderr
    lines = found.stdout.splitlines()
    assert lines[0].startswith("1. [") and "cats.md — Cats" in lines[0]
    assert "sixteen hours" in lines[1]
    assert lines[2].startswith("2. [")
    empty = _cli("search", str(out), "")
    assert empty.returncode == 1 and empty.stderr.strip() == (
        "error: the search query is empty: give some words to search for")


def test_errors_are_one_line_and_non_zero(tmp_path):
    missing = _cli("build", str(tmp_path / "nope"), "--out", str(tmp_path / "idx"))
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    (tmp_path / "empty").mkdir()
    empty = _cli("build", str(tmp_path / "empty"), "--out", str(tmp_path / "idx"))
    assert empty.returncode == 1 and "error: no supported documents found in" in empty.stderr
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "manifest.json").write_text("{broken")
    corrupt = _cli("search", str(tmp_path / "broken"), "query")
    assert corrupt.returncode == 1
    assert corrupt.stderr.strip().count("\n") == 0
    assert "manifest.json is unreadable" in corrupt.stderr and "python -m index build" in corrupt.stderr
    usage = _cli("build", str(tmp_path))
    assert usage.returncode == 2 and "--out" in usage.stderr
