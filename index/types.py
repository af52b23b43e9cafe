"""Dataclasses that cross module boundaries (and the package boundary)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Chunk:
    """A piece of a document; `text == document_text[start:end]`."""

    id: str
    text: str
    source: str  # path relative to the documents folder, with "/" separators
    title: str
    start: int
    end: int


@dataclass(frozen=True)
class SearchHit:
    """One search result; `score` is the cosine similarity (higher is better)."""

    chunk: Chunk
    score: float


@dataclass(frozen=True)
class Document:
    """Text extracted from a file (a .jsonl file yields one per line)."""

    source: str
    title: str
    text: str


@dataclass(frozen=True)
class SkippedFile:
    """A file that was not indexed, and why."""

    path: str
    reason: str


@dataclass
class BuildReport:
    """What `build_index` did; the file lists hold relative paths."""

    out_dir: Path
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    num_chunks: int = 0
    embedded_chunks: int = 0  # chunks embedded by this run (0 when nothing changed)
    index_type: str = ""
    seconds: float = 0.0

    def counts(self) -> dict[str, int]:
        return {
            "added": len(self.added),
            "updated": len(self.updated),
            "removed": len(self.removed),
            "unchanged": len(self.unchanged),
            "skipped": len(self.skipped),
        }

    def summary(self) -> str:
        """One line for people (the app's status line among them): the index folder by its name
        only, never a full path."""
        parts = ", ".join(f"{n} {name}" for name, n in self.counts().items())
        return (
            f"{self.num_chunks} chunks in index {self.out_dir.name!r} ({self.index_type}); files: {parts}; "
            f"embedded {self.embedded_chunks} chunks in {self.seconds:.1f}s"
        )
