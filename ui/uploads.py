"""Uploads: check each file, index the acceptable ones for the uploading session only
(RAGPipeline.add_document: in memory, searchable in that session, never saved nor shared), list and
remove them, and say so in the status line."""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from index import IndexingError

ALLOWED_SUFFIXES = (".txt", ".md", ".html", ".pdf", ".jsonl")
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


PRIVACY_NOTE = ("Documents you upload are searchable in this browser tab only (your session): "
                "no other user sees them, they are not saved, and they are dropped when you "
                "close the tab.")


class Uploads(Protocol):
    """What the upload handlers use of the pipeline (rag.RAGPipeline)."""

    def add_document(self, session: str, path: Path | str, name: str,
                     on_progress: Callable[[int, int], None] | None = None) -> int: ...

    def remove_document(self, session: str, name: str) -> bool: ...

    def documents(self, session: str | None) -> dict[str, int]: ...


# progress(fraction in [0, 1], description): gradio's gr.Progress has this shape.
ProgressFn = Callable[..., object]


@dataclass
class UploadResult:
    saved: list[str] = field(default_factory=list)  # names indexed, with their chunks
    chunks: dict[str, int] = field(default_factory=dict)
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (name, reason)

    def message(self) -> str:
        lines = []
        if self.saved:
            lines.append("Added: " + ", ".join(f"{n} ({_count(self.chunks[n], 'chunk')})"
                                               for n in self.saved))
            lines.append("Index updated: searchable in this session only.")
        for name, reason in self.rejected:
            lines.append(f"Not added: {name}: {reason}")
        return "\n".join(lines) or "No files were uploaded."


def safe_name(name: str) -> str:
    """A plain file name (no folders, no odd characters) that keeps the suffix."""
    base = Path(name.replace("\\", "/")).name
    stem, suffix = Path(base).stem, Path(base).suffix.lower()
    stem = _UNSAFE.sub("_", stem).strip("._") or "document"
    return stem[:80] + suffix


def check_upload(path: Path, display_name: str, max_bytes: int = MAX_UPLOAD_BYTES) -> str | None:
    """The reason the file cannot be added, or None when it can."""
    suffix = Path(display_name).suffix.lower()
    if suffix not in ALLOWED_SUFFIXES:
        return (f"unsupported file type {suffix or '(no extension)'!r}; "
                f"supported: {', '.join(ALLOWED_SUFFIXES)}")
    try:
        size = path.stat().st_size
    except OSError as exc:
        return f"cannot read the upload ({exc.strerror or exc})"
    if size > max_bytes:
        return f"too large ({size / 2**20:.1f} MB; limit {max_bytes / 2**20:.0f} MB)"
    if size == 0:
        return "the file is empty"
    return None


def add_uploads(pipe: Uploads, session: str, paths: list[str] | None,
                progress: ProgressFn | None = None, max_bytes: int = MAX_UPLOAD_BYTES) -> UploadResult:
    """Index every acceptable upload for `session`; list the others with the reason (an error of
    the indexer, such as a PDF that is not one, included). `progress(fraction, desc=...)` follows
    each file's embedding."""
    result = UploadResult()
    paths = list(paths or [])
    for number, raw in enumerate(paths):
        path = Path(str(raw))
        name = safe_name(path.name)
        reason = check_upload(path, path.name, max_bytes)
        if reason:
            result.rejected.append((path.name, reason))
            continue

        def report(done: int, total: int, number: int = number, name: str = name) -> None:
            if progress is not None:
                progress((number + done / max(total, 1)) / len(paths),
                         desc=f"Indexing {name}: embedding chunks {done}/{total}")

        try:
            result.chunks[name] = pipe.add_document(session, path, name, on_progress=report)
        except (IndexingError, ValueError, OSError) as exc:  # the reason, shown; nothing else changes
            result.rejected.append((path.name, str(exc).removeprefix(f"{name}: ")))
            continue
        result.saved.append(name)
    return result


def remove_uploads(pipe: Uploads, session: str, names: list[str] | None) -> str:
    """Remove the session's uploads `names`; a one-line message."""
    removed = [name for name in names or [] if pipe.remove_document(session, name)]
    return ("Removed: " + ", ".join(removed)) if removed else "Nothing was removed (select uploads first)."


def documents_line(documents: Mapping[str, int]) -> str:
    if not documents:
        return "Your uploads: none."
    return (f"Your uploads: {_count(len(documents), 'document')}, "
            f"{_count(sum(documents.values()), 'chunk')} (this session only).")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def status_line(service_status: str, documents: Mapping[str, int]) -> str:
    """The page's status line: the service's, then the session's uploads."""
    return f"{service_status} · {documents_line(documents)}" if documents else service_status
