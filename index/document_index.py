"""A loaded index: search it, inspect its chunks."""
from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np

from . import store
from .embedder import Embedder, as_embedder
from .errors import EmbedderMismatchError, rebuild_hint
from .types import Chunk, SearchHit


class DocumentIndex:
    """Chunks plus their FAISS vectors, searchable with the embedder that built them.

    To add or change documents, put them in the documents folder and call
    `build_index` again (only new/changed files are embedded), then `reload()`.
    """

    def __init__(self, path: Path, stored: store.StoredIndex, embedder: Embedder) -> None:
        self.path = path
        self.manifest = stored.manifest
        self.chunks: list[Chunk] = stored.chunks
        self.embedder = embedder
        self._faiss: faiss.Index = stored.faiss_index

    def __len__(self) -> int:
        return len(self.chunks)

    def __repr__(self) -> str:
        return f"DocumentIndex({str(self.path)!r}, chunks={len(self)}, embedder={self.embedder.name!r})"

    @property
    def sources(self) -> list[str]:
        """Indexed files, relative to the documents folder."""
        return sorted(self.manifest.files)

    def search(self, query: str, k: int = 4, min_score: float | None = None) -> list[SearchHit]:
        """The k chunks most similar to `query`, best first; scores are cosine
        similarities, and hits scoring below `min_score` are dropped. An empty (or blank)
        query is a ValueError: it has no meaning to compare with."""
        if not isinstance(query, str) or not query.strip():
            raise ValueError("the search query is empty: give some words to search for")
        return self.search_vector(self.embedder.embed([query])[0], k, min_score)

    def search_vector(self, vector: np.ndarray, k: int = 4,
                      min_score: float | None = None) -> list[SearchHit]:
        """`search` for a query already embedded with this index's embedder (a unit vector)."""
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        query = np.asarray(vector, dtype=np.float32).reshape(1, -1)
        scores, ids = self._faiss.search(query, min(k, len(self.chunks)))
        hits = [SearchHit(self.chunks[i], float(s)) for s, i in zip(scores[0], ids[0]) if i >= 0]
        if min_score is not None:
            hits = [hit for hit in hits if hit.score >= min_score]
        return hits

    def reload(self) -> "DocumentIndex":
        """A fresh view of the folder, e.g. after an incremental build."""
        return load_index(self.path, self.embedder)


def load_index(out_dir: Path | str, embedder: Embedder | str | None = None) -> DocumentIndex:
    """Open an index folder. `embedder=None` uses the embedder recorded in the
    manifest; a different one raises EmbedderMismatchError, because vectors of
    different models are not comparable."""
    out_dir = Path(out_dir)
    stored = store.load(out_dir)
    built_with = stored.manifest.embedder
    requested = as_embedder(built_with if embedder is None else embedder)
    if requested.name != built_with:
        raise EmbedderMismatchError(
            f"index {out_dir / store.MANIFEST} was built with embedder {built_with!r}, "
            f"not {requested.name!r}; search it with {built_with!r}, or "
            f"{rebuild_hint(out_dir, stored.manifest.docs_dir)} --embedder {requested.name}")
    return DocumentIndex(out_dir, stored, requested)
