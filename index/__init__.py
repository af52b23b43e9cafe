"""Build, persist, update and search a FAISS index over a folder of documents.

    from index import build_index, load_index
    report = build_index("data/docs", "indexes/demo")   # incremental on re-run
    hits = load_index("indexes/demo").search("what does the with statement do?", k=4)
"""
from .builder import build_index
from .chunking import DEFAULT_CHUNK_OVERLAP, DEFAULT_CHUNK_SIZE
from .document_index import DocumentIndex, load_index
from .embedder import DEFAULT_EMBEDDER, Embedder
from .memory import MemoryIndex
from .store import has_index, lock_holder
from .errors import (EmbedderMismatchError, EmbedderNotFoundError, IndexCorruptError, IndexingError,
                     IndexMissingError, NoDocumentsError)
from .types import BuildReport, Chunk, SearchHit, SkippedFile
from .vectors import HNSW_THRESHOLD

__all__ = [
    "BuildReport", "Chunk", "DEFAULT_CHUNK_OVERLAP", "DEFAULT_CHUNK_SIZE", "DEFAULT_EMBEDDER",
    "DocumentIndex", "Embedder", "EmbedderMismatchError", "EmbedderNotFoundError", "HNSW_THRESHOLD", "IndexCorruptError",
    "IndexMissingError", "IndexingError", "MemoryIndex", "NoDocumentsError", "SearchHit", "SkippedFile",
    "build_index", "has_index", "load_index", "lock_holder",
]
