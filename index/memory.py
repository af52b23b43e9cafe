"""An in-memory index of a few documents, never written to disk: one user's uploads.

Documents are added and removed whole; search takes a query vector from the same embedder, so a
caller that searches this and a `DocumentIndex` embeds the query once and compares like with like.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .chunking import DEFAULT_CHUNK_OVERLAP, DEFAULT_CHUNK_SIZE, make_splitter, split_document
from .embedder import Embedder
from .errors import IndexingError
from .ingest import MAX_FILE_BYTES, SourceFile, UnreadableFile, extract, readers
from .types import Chunk, SearchHit

EMBED_SLICE = 32


@dataclass(frozen=True)
class MemoryDocument:
    name: str
    chunks: tuple[Chunk, ...]
    vectors: np.ndarray  # (len(chunks), dim), unit rows


class MemoryIndex:
    """Documents by name (a name added again replaces its document); safe to share between threads."""

    def __init__(self, embedder: Embedder, chunk_size: int = DEFAULT_CHUNK_SIZE,
                 chunk_overlap: int = DEFAULT_CHUNK_OVERLAP) -> None:
        self.embedder = embedder
        self._sizes = (chunk_size, chunk_overlap)
        self._docs: dict[str, MemoryDocument] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """Chunks over all documents."""
        with self._lock:
            return sum(len(d.chunks) for d in self._docs.values())

    @property
    def names(self) -> list[str]:
        """The documents' names, in the order they were added."""
        with self._lock:
            return list(self._docs)

    def chunk_counts(self) -> dict[str, int]:
        with self._lock:
            return {name: len(doc.chunks) for name, doc in self._docs.items()}

    def add_file(self, path: Path | str, name: str, max_bytes: int = MAX_FILE_BYTES,
                 on_progress: Callable[[int, int], None] | None = None) -> int:
        """Read, chunk and embed the file at `path` as document `name` (its suffix picks the reader);
        the number of chunks. Raises IndexingError, with the reason, for a file that cannot be used.
        `on_progress(done, total)` follows the embedding, in chunks."""
        path = Path(path)
        reader = readers().get(Path(name).suffix.lower())
        if reader is None:
            raise IndexingError(f"{name}: unsupported file type {Path(name).suffix or '(none)'!r}")
        try:
            size = path.stat().st_size
            if size > max_bytes:
                raise UnreadableFile(f"too large ({size / 2**20:.1f} MB; the limit is {max_bytes / 2**20:.0f} MB)")
            data = path.read_bytes()
            if not data:
                raise UnreadableFile("empty file (0 bytes)")
            docs = extract(SourceFile(path, name, data), reader)
        except OSError as exc:
            raise IndexingError(f"{name}: unreadable ({exc.strerror or exc})") from exc
        except UnreadableFile as exc:
            raise IndexingError(f"{name}: {exc}") from exc
        splitter = make_splitter(self.embedder.tokenizer, *self._sizes)
        chunks = [c for n, doc in enumerate(docs) for c in split_document(doc, n, splitter)]
        if not chunks:
            raise IndexingError(f"{name}: no extractable text")
        parts = []
        for start in range(0, len(chunks), EMBED_SLICE):
            if on_progress:
                on_progress(start, len(chunks))
            parts.append(self.embedder.embed([c.text for c in chunks[start:start + EMBED_SLICE]]))
        if on_progress:
            on_progress(len(chunks), len(chunks))
        document = MemoryDocument(name, tuple(chunks), np.concatenate(parts))
        with self._lock:
            self._docs.pop(name, None)
            self._docs[name] = document
        return len(chunks)

    def remove(self, name: str) -> bool:
        """Drop document `name`; False when there is none."""
        with self._lock:
            return self._docs.pop(name, None) is not None

    def search_vector(self, vector: np.ndarray, k: int, min_score: float | None = None) -> list[SearchHit]:
        """The k chunks most similar to the unit query `vector`, best first (cosine scores)."""
        with self._lock:
            docs = list(self._docs.values())
        if not docs or k <= 0:
            return []
        chunks = [c for d in docs for c in d.chunks]
        scores = np.concatenate([d.vectors for d in docs]) @ np.asarray(vector, dtype=np.float32).reshape(-1)
        order = np.argsort(-scores, kind="stable")[:k]
        hits = [SearchHit(chunks[i], float(scores[i])) for i in order]
        return [h for h in hits if min_score is None or h.score >= min_score]
