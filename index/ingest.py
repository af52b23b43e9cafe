"""Find documents in a folder and extract their text.

Policy for bad input: a file that cannot be read or parsed is skipped (with a
logging warning) and reported, never fatal. Text files must be valid UTF-8: a
file that is not is skipped rather than decoded with replacement characters,
because silently indexing mojibake gives wrong answers that look right.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bs4 import BeautifulSoup
from pypdf import PdfReader

from .types import Document

log = logging.getLogger(__name__)

JSONL_TEXT_FIELD = "text"
# Bigger files are skipped: a 200 MB text file is ~200k chunks, hours of embedding on a CPU, and is
# read into memory whole. Raise it with build_index(max_file_bytes=...) / --max-file-mb.
MAX_FILE_BYTES = 50 * 2**20
_MD_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
_DROPPED_HTML_TAGS = ["script", "style", "noscript", "template"]


class UnreadableFile(Exception):
    """Raised by a reader with the reason the file is skipped."""


@dataclass(frozen=True)
class SourceFile:
    """A candidate file: its bytes are read once, for both hashing and parsing."""

    path: Path
    rel: str
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def _decode(data: bytes) -> str:
    if b"\x00" in data:
        raise UnreadableFile("binary content (NUL bytes)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UnreadableFile(f"not valid UTF-8 ({exc.reason} at byte {exc.start})") from exc


def read_text(src: SourceFile) -> list[Document]:
    return [Document(src.rel, src.path.stem, _decode(src.data))]


def read_markdown(src: SourceFile) -> list[Document]:
    text = _decode(src.data)
    heading = _MD_HEADING.search(text)
    return [Document(src.rel, heading.group(1) if heading else src.path.stem, text)]


def read_html(src: SourceFile) -> list[Document]:
    if b"\x00" in src.data:
        raise UnreadableFile("binary content (NUL bytes)")
    soup = BeautifulSoup(src.data, "html.parser")
    for tag in soup(_DROPPED_HTML_TAGS):
        tag.decompose()
    title_tag = soup.find("title")
    title = title_tag.get_text(" ", strip=True) if title_tag else ""
    body = soup.body or soup
    return [Document(src.rel, title or src.path.stem, body.get_text("\n", strip=True))]


def read_pdf(src: SourceFile) -> list[Document]:
    try:
        reader = PdfReader(io.BytesIO(src.data))
        if reader.is_encrypted:
            raise UnreadableFile("encrypted PDF")
        pages = [page.extract_text() or "" for page in reader.pages]
        meta_title = (reader.metadata.title if reader.metadata else None) or ""
    except UnreadableFile:
        raise
    except Exception as exc:  # pypdf raises many types for malformed files
        raise UnreadableFile(f"invalid PDF ({type(exc).__name__}: {exc})") from exc
    return [Document(src.rel, meta_title.strip() or src.path.stem, "\n\n".join(pages))]


def make_jsonl_reader(text_field: str = JSONL_TEXT_FIELD) -> Callable[[SourceFile], list[Document]]:
    """One document per line; a bad line is skipped (logged), the rest are kept."""

    def read_jsonl(src: SourceFile) -> list[Document]:
        docs: list[Document] = []
        for lineno, line in enumerate(_decode(src.data).splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                text = record[text_field]
            except (json.JSONDecodeError, KeyError, TypeError):
                log.warning("skipping %s:%d: not a JSON object with a %r field",
                            src.rel, lineno, text_field)
                continue
            if isinstance(text, str):
                title = record.get("title")
                if not (isinstance(title, str) and title):
                    title = f"{src.path.stem} #{lineno}"
                docs.append(Document(src.rel, title, text))
        return docs

    return read_jsonl


Reader = Callable[[SourceFile], list[Document]]


def readers(jsonl_text_field: str = JSONL_TEXT_FIELD) -> dict[str, Reader]:
    """File suffix (lower case) -> reader."""
    return {
        ".txt": read_text,
        ".md": read_markdown,
        ".markdown": read_markdown,
        ".html": read_html,
        ".htm": read_html,
        ".pdf": read_pdf,
        ".jsonl": make_jsonl_reader(jsonl_text_field),
    }


def iter_files(docs_dir: Path, exclude: Path | None = None) -> Iterator[Path]:
    """Files under docs_dir in a stable order; hidden entries and `exclude` (the
    index folder, when it lives inside the documents folder) are left out."""
    excluded = exclude.resolve() if exclude else None
    for path in sorted(docs_dir.rglob("*")):
        rel_parts = path.relative_to(docs_dir).parts
        if any(part.startswith(".") for part in rel_parts):
            continue
        if excluded and (path.resolve() == excluded or excluded in path.resolve().parents):
            continue
        if path.is_file() or path.is_symlink():
            yield path


def load_source(path: Path, docs_dir: Path, max_bytes: int = MAX_FILE_BYTES) -> SourceFile:
    """Read a file's bytes, or raise UnreadableFile."""
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise UnreadableFile(f"too large ({size / 2**20:.1f} MB; the limit is {max_bytes / 2**20:.0f} MB)")
        data = path.read_bytes()
    except OSError as exc:
        raise UnreadableFile(f"unreadable ({exc.strerror or exc})") from exc
    if not data:
        raise UnreadableFile("empty file (0 bytes)")
    return SourceFile(path, path.relative_to(docs_dir).as_posix(), data)


def extract(src: SourceFile, reader: Reader) -> list[Document]:
    """Documents with some text in them, or raise UnreadableFile."""
    docs = [doc for doc in reader(src) if doc.text.strip()]
    if not docs:
        raise UnreadableFile("no extractable text")
    return docs
