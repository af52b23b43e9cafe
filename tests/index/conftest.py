"""Fixtures shared by the tests of the index package."""
from __future__ import annotations

import os

# Before anything imports transformers: never reach for a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from index import Embedder  # noqa: E402

# Three documents on clearly different subjects, so "the relevant chunk first"
# is unambiguous.
CORPUS = {
    "cats.md": "# Cats\n\nCats are small carnivorous mammals kept as pets. A cat purrs when content "
               "and sleeps up to sixteen hours a day.\n",
    "volcanoes.txt": "A volcano is a rupture in the crust of a planet through which lava, volcanic "
                     "ash and gases escape from a magma chamber below the surface.\n",
    "notes/bread.html": "<html><head><title>Baking bread</title><style>p {color: red}</style>"
                        "</head><body><h1>Bread</h1><p>Knead the dough, let the yeast make it rise, "
                        "then bake the loaf in a hot oven.</p><script>var secret = 1;</script>"
                        "</body></html>",
}


def _write_files(root: Path, files: dict[str, str | bytes]) -> Path:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return root


def _make_pdf(text: str) -> bytes:
    """A minimal valid one-page PDF showing `text` in Helvetica (ASCII only)."""
    content = b"BT /F1 12 Tf 72 720 Td (" + text.encode("ascii") + b") Tj ET"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    return Embedder(device="cpu")


@pytest.fixture
def write_files() -> Callable[[Path, dict[str, str | bytes]], Path]:
    """write_files(root, {relative path: text or bytes}) -> root"""
    return _write_files


@pytest.fixture
def make_pdf() -> Callable[[str], bytes]:
    return _make_pdf


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A documents folder holding CORPUS."""
    return _write_files(tmp_path / "docs", CORPUS)
