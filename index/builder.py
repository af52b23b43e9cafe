"""Build or incrementally update an index folder from a documents folder."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from langchain_text_splitters import TextSplitter
from tqdm import tqdm

from . import store
from .chunking import (DEFAULT_CHUNK_OVERLAP, DEFAULT_CHUNK_SIZE, check_chunk_settings,
                       make_splitter, split_document)
from .embedder import Embedder, as_embedder
from .errors import IndexCorruptError, IndexingError, IndexMissingError, NoDocumentsError
from .ingest import (JSONL_TEXT_FIELD, MAX_FILE_BYTES, Reader, SourceFile, UnreadableFile, extract, iter_files,
                     load_source, readers)
from .types import BuildReport, Chunk, SkippedFile
from .vectors import HNSW_THRESHOLD, build_faiss, index_type_for

log = logging.getLogger(__name__)

# on_progress(stage, done, total): stage "reading" (files) or "embedding" (chunks).
Progress = Callable[[str, int, int], None] | None
EMBED_SLICE = 64


@dataclass
class _FileChunks:
    rel: str
    sha256: str
    chunks: list[Chunk]
    vectors: np.ndarray | None  # None until embedded


@dataclass
class _Previous:
    """What the last build left: file hashes always, vectors only if reusable."""

    files: dict[str, store.FileEntry] = field(default_factory=dict)
    chunks: dict[str, Chunk] = field(default_factory=dict)
    rows: dict[str, np.ndarray] = field(default_factory=dict)  # chunk id -> vector

    def reusable(self, rel: str, sha256: str) -> bool:
        entry = self.files.get(rel)
        return entry is not None and entry.sha256 == sha256 and all(
            cid in self.rows for cid in entry.chunk_ids)

    def reuse(self, rel: str, sha256: str) -> _FileChunks:
        """An unchanged file's chunks and stored vectors (nothing to embed)."""
        ids = self.files[rel].chunk_ids
        return _FileChunks(rel, sha256, [self.chunks[cid] for cid in ids],
                           np.stack([self.rows[cid] for cid in ids]))


def _load_previous(out_dir: Path, embedder: str, chunk_size: int, chunk_overlap: int) -> _Previous:
    try:
        old = store.load(out_dir, with_embeddings=True)
    except IndexMissingError:
        return _Previous()
    except IndexCorruptError as exc:
        log.warning("rebuilding from scratch: %s", exc)
        return _Previous()
    previous = _Previous(files=old.manifest.files)
    settings = (old.manifest.embedder, old.manifest.chunk_size, old.manifest.chunk_overlap)
    if settings != (embedder, chunk_size, chunk_overlap):
        log.info("embedder or chunk settings changed %s -> %s: re-embedding everything",
                 settings, (embedder, chunk_size, chunk_overlap))
        return previous
    assert old.embeddings is not None
    previous.chunks = {chunk.id: chunk for chunk in old.chunks}
    previous.rows = {chunk.id: old.embeddings[i] for i, chunk in enumerate(old.chunks)}
    return previous


class _Chunker:
    """Creates the splitter (which loads the model) only when a file needs it."""

    def __init__(self, embedder: Embedder, chunk_size: int, chunk_overlap: int) -> None:
        self._args = (embedder, chunk_size, chunk_overlap)
        self._splitter: TextSplitter | None = None

    def __call__(self, reader: Reader, src: SourceFile) -> list[Chunk]:
        if self._splitter is None:
            embedder, size, overlap = self._args
            self._splitter = make_splitter(embedder.tokenizer, size, overlap)
        docs = extract(src, reader)
        return [c for n, doc in enumerate(docs) for c in split_document(doc, n, self._splitter)]


def _collect(docs_dir: Path, out_dir: Path, previous: _Previous, chunker: _Chunker,
             text_field: str, report: BuildReport, progress: bool, max_bytes: int,
             on_progress: Progress) -> list[_FileChunks]:
    """Read every file; reuse unchanged ones, chunk the rest; fill the report."""
    by_suffix = readers(text_field)
    files: list[_FileChunks] = []
    paths = list(iter_files(docs_dir, exclude=out_dir))
    for done, path in enumerate(tqdm(paths, desc="reading", unit="file", disable=not progress)):
        if on_progress:
            on_progress("reading", done, len(paths))
        rel = path.relative_to(docs_dir).as_posix()
        reader = by_suffix.get(path.suffix.lower())
        try:
            if reader is None:
                raise UnreadableFile(f"unsupported file type {path.suffix or '(none)'!r}")
            src = load_source(path, docs_dir, max_bytes)
            if previous.reusable(rel, src.sha256):
                files.append(previous.reuse(rel, src.sha256))
                report.unchanged.append(rel)
                continue
            files.append(_FileChunks(rel, src.sha256, chunker(reader, src), None))
        except UnreadableFile as exc:
            log.warning("skipping %s: %s", path, exc)
            report.skipped.append(SkippedFile(rel, str(exc)))
            continue
        (report.updated if rel in previous.files else report.added).append(rel)
    return files


def _embed_new(files: list[_FileChunks], embedder: Embedder, progress: bool,
               on_progress: Progress) -> int:
    """Embed the chunks of every new or changed file (in slices of EMBED_SLICE when progress is
    reported, so that it can be)."""
    pending = [f for f in files if f.vectors is None]
    texts = [c.text for f in pending for c in f.chunks]
    if not texts:
        return 0
    if on_progress is None:
        vectors = embedder.embed(texts, progress=progress)
    else:
        parts = []
        for start in range(0, len(texts), EMBED_SLICE):
            on_progress("embedding", start, len(texts))
            parts.append(embedder.embed(texts[start:start + EMBED_SLICE], progress=progress))
        on_progress("embedding", len(texts), len(texts))
        vectors = np.concatenate(parts)
    offset = 0
    for f in pending:
        f.vectors, offset = vectors[offset:offset + len(f.chunks)], offset + len(f.chunks)
    return len(texts)


def build_index(
    docs_dir: Path | str,
    out_dir: Path | str,
    embedder: Embedder | str | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    chunk_overlap: int = DEFAULT_CHUNK_OVERLAP,
    progress: bool = True,
    *,
    hnsw_threshold: int = HNSW_THRESHOLD,
    jsonl_text_field: str = JSONL_TEXT_FIELD,
    max_file_bytes: int = MAX_FILE_BYTES,
    on_progress: Progress = None,
) -> BuildReport:
    """Index every supported file under `docs_dir` into `out_dir`.

    Re-running on the same `out_dir` only embeds new and changed files (by
    sha256); removed files are dropped. Files that cannot be used, or are over
    `max_file_bytes`, are skipped and listed in `report.skipped`. `on_progress(stage, done, total)`
    is called as files are read (stage "reading", counting files) and chunks embedded
    ("embedding", counting chunks; its last call has done == total). The folder is
    replaced atomically, and not rewritten at all when nothing changed. Raises NoDocumentsError when
    `docs_dir` is missing or yields no text.
    """
    started = time.monotonic()
    docs_dir, out_dir = Path(docs_dir), Path(out_dir)
    check_chunk_settings(chunk_size, chunk_overlap)
    if not docs_dir.is_dir():
        raise NoDocumentsError(f"documents folder {docs_dir} does not exist or is not a folder")
    if out_dir.exists() and not out_dir.is_dir():
        raise IndexingError(f"index path {out_dir} is a file; pass a folder for the index")
    embedder = as_embedder(embedder)
    report = BuildReport(out_dir)
    with store.build_lock(out_dir):
        previous = _load_previous(out_dir, embedder.name, chunk_size, chunk_overlap)
        files = _collect(docs_dir, out_dir, previous, _Chunker(embedder, chunk_size, chunk_overlap),
                         jsonl_text_field, report, progress, max_file_bytes, on_progress)
        report.removed = sorted(set(previous.files) - {f.rel for f in files})
        report.num_chunks = sum(len(f.chunks) for f in files)
        if report.num_chunks == 0:
            skipped = f" ({len(report.skipped)} files skipped)" if report.skipped else ""
            raise NoDocumentsError(f"no supported documents found in {docs_dir}{skipped}; "
                                   f"supported: {', '.join(sorted(readers()))}")
        report.embedded_chunks = _embed_new(files, embedder, progress, on_progress)
        _save(files, out_dir, docs_dir, embedder, chunk_size, chunk_overlap, hnsw_threshold, report)
    report.seconds = time.monotonic() - started
    log.info("%s", report.summary())
    return report


def _save(files: list[_FileChunks], out_dir: Path, docs_dir: Path, embedder: Embedder,
          chunk_size: int, chunk_overlap: int, hnsw_threshold: int, report: BuildReport) -> None:
    report.index_type = index_type_for(report.num_chunks, hnsw_threshold)
    if not (report.added or report.updated or report.removed) and _same_layout(out_dir, report):
        # Nothing changed: keep the index as it is, but clear what a killed build left beside it
        # (found by `python -m reliability.crash`: a kill between commit and cleanup).
        store.remove_stale(out_dir)
        return
    embeddings = np.concatenate([f.vectors for f in files if f.vectors is not None])
    faiss_index, _ = build_faiss(embeddings, hnsw_threshold)
    manifest = store.Manifest(
        embedder=embedder.name, embedding_dim=int(embeddings.shape[1]), chunk_size=chunk_size,
        chunk_overlap=chunk_overlap, index_type=report.index_type, num_chunks=len(embeddings),
        docs_dir=str(docs_dir.resolve()),
        files={f.rel: store.FileEntry(f.sha256, [c.id for c in f.chunks]) for f in files})
    store.save(out_dir, manifest, [c for f in files for c in f.chunks], embeddings, faiss_index)


def _same_layout(out_dir: Path, report: BuildReport) -> bool:
    """True when the stored index already has this index type (a changed
    hnsw_threshold can switch it even if no document changed)."""
    try:
        return store.read_manifest(out_dir).index_type == report.index_type
    except (IndexMissingError, IndexCorruptError):
        return False
