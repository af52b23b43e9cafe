"""On-disk layout of an index folder, written atomically and verified on load.

    manifest.json               settings, per-file hashes and chunk ids, and the
                                names + sha256 of the three data files below
    index-<gen>.faiss           the FAISS index
    chunks-<gen>.jsonl          one Chunk per line, in vector order
    embeddings-<gen>.npy        the vectors, so incremental builds reuse them

Atomicity: data files of a new build get a fresh generation suffix, so they
never overwrite the live ones; `manifest.json` is then replaced with
`os.replace`, which is the single commit point. A crash at any moment leaves
either the old manifest (pointing at the old, untouched files) or the new one.
Files of other generations are deleted after the commit. Builds into one
folder are serialised with a lock file, so that one build's cleanup never
deletes the files another build is about to commit.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import faiss
import numpy as np

from .errors import IndexCorruptError, IndexMissingError, rebuild_hint
from .types import Chunk

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
LOCK = ".build.lock"
_DATA_PREFIXES = ("index-", "chunks-", "embeddings-", MANIFEST + ".tmp-")


@dataclass
class FileEntry:
    sha256: str
    chunk_ids: list[str]


@dataclass
class Manifest:
    embedder: str
    embedding_dim: int
    chunk_size: int
    chunk_overlap: int
    index_type: str
    num_chunks: int
    docs_dir: str
    files: dict[str, FileEntry] = field(default_factory=dict)
    data_files: dict[str, dict[str, str]] = field(default_factory=dict)  # role -> {name, sha256}
    format_version: int = FORMAT_VERSION
    created_at: float = 0.0

    @classmethod
    def from_json(cls, raw: dict) -> "Manifest":
        raw = dict(raw)
        raw["files"] = {rel: FileEntry(**entry) for rel, entry in raw["files"].items()}
        return cls(**raw)


@dataclass
class StoredIndex:
    manifest: Manifest
    chunks: list[Chunk]
    faiss_index: faiss.Index
    embeddings: np.ndarray | None  # only loaded when asked for (incremental builds)


@contextlib.contextmanager
def build_lock(out_dir: Path) -> Iterator[None]:
    """Exclusive lock on an index folder for the duration of a build.

    The lock is the OS's (`flock` on `.build.lock`), held by the open file, so the OS releases it
    when its holder dies, however it dies: a `.build.lock` left by a killed build never blocks or
    alters a later build. The holder writes its pid into the file, so that a build that has to
    wait can say for whom (`lock_holder`).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / LOCK).open("a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("index %s is being built by process %s; waiting for that build to end",
                        out_dir, lock_holder(out_dir) or "(unknown)")
            fcntl.flock(fh, fcntl.LOCK_EX)
        _write_holder(fh, str(os.getpid()))
        try:
            yield
        finally:
            _write_holder(fh, "")
            fcntl.flock(fh, fcntl.LOCK_UN)


def _write_holder(fh: IO[str], text: str) -> None:
    fh.truncate(0)
    fh.write(text)
    fh.flush()


def lock_holder(out_dir: Path) -> int | None:
    """The pid of the live process building into `out_dir` (0 while it has not written it yet), or
    None when no build holds the lock (a `.build.lock` left by a killed build is not held: the OS
    released it with its holder)."""
    path = out_dir / LOCK
    try:
        fh = path.open("r")
    except OSError:
        return None
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = fh.read().strip()
            return int(text) if text.isdigit() else 0
        fcntl.flock(fh, fcntl.LOCK_UN)
        return None


def has_index(out_dir: Path) -> bool:
    """True when `out_dir` holds a committed index (a manifest): a folder holding only a killed
    first build's leftovers (its `.build.lock`, uncommitted data files) has none."""
    return (out_dir / MANIFEST).is_file()


def _sha256_file(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_faiss(index: faiss.Index, path: Path) -> None:
    faiss.write_index(index, str(path))


def _write_chunks(chunks: list[Chunk], path: Path) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for chunk in chunks:
            fh.write(json.dumps(dataclasses.asdict(chunk), ensure_ascii=False) + "\n")


def _write_embeddings(embeddings: np.ndarray, path: Path) -> None:
    np.save(path, embeddings, allow_pickle=False)


def _write_manifest(manifest: Manifest, out_dir: Path, gen: str) -> None:
    tmp = out_dir / f"{MANIFEST}.tmp-{gen}"
    tmp.write_text(json.dumps(dataclasses.asdict(manifest), indent=1), encoding="utf-8")
    _fsync(tmp)
    os.replace(tmp, out_dir / MANIFEST)  # the commit point


def save(out_dir: Path, manifest: Manifest, chunks: list[Chunk],
         embeddings: np.ndarray, faiss_index: faiss.Index) -> None:
    """Write a complete index next to the live one, then switch to it atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    gen = f"{int(time.time())}-{uuid.uuid4().hex[:8]}"
    writers = {
        "faiss": (f"index-{gen}.faiss", lambda p: _write_faiss(faiss_index, p)),
        "chunks": (f"chunks-{gen}.jsonl", lambda p: _write_chunks(chunks, p)),
        "embeddings": (f"embeddings-{gen}.npy", lambda p: _write_embeddings(embeddings, p)),
    }
    for role, (name, write) in writers.items():
        path = out_dir / name
        write(path)
        _fsync(path)  # data must be on disk before the manifest points at it
        manifest.data_files[role] = {"name": name, "sha256": _sha256_file(path)}
    manifest.created_at = time.time()
    _write_manifest(manifest, out_dir, gen)
    remove_stale(out_dir, manifest)


def remove_stale(out_dir: Path, manifest: Manifest | None = None) -> None:
    """Remove the data files that the manifest (default: the one on disk) does not name: the old
    generation after a commit, or what a build killed after its commit or while writing left.
    Call under the build lock."""
    manifest = manifest or read_manifest(out_dir)
    _remove_other_generations(out_dir, {entry["name"] for entry in manifest.data_files.values()})


def _remove_other_generations(out_dir: Path, keep: set[str]) -> None:
    """Old generations and leftovers of crashed builds; best effort."""
    for path in out_dir.iterdir():
        if path.name.startswith(_DATA_PREFIXES) and path.name not in keep:
            try:
                path.unlink()
            except OSError as exc:
                log.warning("could not remove stale index file %s: %s", path, exc)


def read_manifest(out_dir: Path) -> Manifest:
    path = out_dir / MANIFEST
    if out_dir.exists() and not out_dir.is_dir():
        raise IndexMissingError(f"index path {out_dir} is a file, not an index folder")
    if not out_dir.is_dir():
        raise IndexMissingError(f"no index folder {out_dir}; build it with: "
                                f"python -m index build DOCS --out {out_dir}")
    if not path.is_file():
        raise IndexMissingError(f"index manifest {path} is missing; {rebuild_hint(out_dir)}")
    try:
        manifest = Manifest.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise IndexCorruptError(f"index manifest {path} is unreadable ({exc}); "
                                f"{rebuild_hint(out_dir)}") from exc
    if manifest.format_version != FORMAT_VERSION:
        raise IndexCorruptError(
            f"index manifest {path} has format version {manifest.format_version}, "
            f"this code reads version {FORMAT_VERSION}; {rebuild_hint(out_dir, manifest.docs_dir)}")
    return manifest


def _data_path(out_dir: Path, manifest: Manifest, role: str) -> Path:
    """The verified path of a data file (present, checksum matches)."""
    hint = rebuild_hint(out_dir, manifest.docs_dir)
    entry = manifest.data_files.get(role)
    if entry is None:
        raise IndexCorruptError(f"index manifest {out_dir / MANIFEST} lists no {role} file; {hint}")
    path = out_dir / entry["name"]
    if not path.is_file():
        raise IndexCorruptError(f"index file {path} is missing; {hint}")
    if _sha256_file(path) != entry["sha256"]:
        raise IndexCorruptError(f"index file {path} is corrupt (checksum mismatch); {hint}")
    return path


def _read_chunks(path: Path, hint: str) -> list[Chunk]:
    try:
        with path.open(encoding="utf-8") as fh:
            return [Chunk(**json.loads(line)) for line in fh]
    except (OSError, ValueError, TypeError) as exc:
        raise IndexCorruptError(f"index file {path} is unreadable ({exc}); {hint}") from exc


def load(out_dir: Path, with_embeddings: bool = False) -> StoredIndex:
    """Load and cross-check an index folder; raise IndexMissingError/IndexCorruptError."""
    manifest = read_manifest(out_dir)
    try:
        return _load(out_dir, manifest, with_embeddings)
    except IndexCorruptError:
        # A build may have committed (and removed our files) while we read: retry once.
        latest = read_manifest(out_dir)
        if latest.data_files == manifest.data_files:
            raise
        return _load(out_dir, latest, with_embeddings)


def _load(out_dir: Path, manifest: Manifest, with_embeddings: bool) -> StoredIndex:
    hint = rebuild_hint(out_dir, manifest.docs_dir)
    faiss_path = _data_path(out_dir, manifest, "faiss")
    try:
        faiss_index = faiss.read_index(str(faiss_path))
    except RuntimeError as exc:
        raise IndexCorruptError(f"index file {faiss_path} is unreadable ({exc}); {hint}") from exc
    chunks_path = _data_path(out_dir, manifest, "chunks")
    chunks = _read_chunks(chunks_path, hint)
    if not faiss_index.ntotal == len(chunks) == manifest.num_chunks:
        raise IndexCorruptError(
            f"index files in {out_dir} disagree: {faiss_path.name} has {faiss_index.ntotal} "
            f"vectors, {chunks_path.name} has {len(chunks)} chunks, the manifest says "
            f"{manifest.num_chunks}; {hint}")
    if faiss_index.d != manifest.embedding_dim:
        raise IndexCorruptError(f"index file {faiss_path} has dimension {faiss_index.d}, "
                                f"the manifest says {manifest.embedding_dim}; {hint}")
    embeddings = None
    if with_embeddings:
        embeddings_path = _data_path(out_dir, manifest, "embeddings")
        embeddings = np.load(embeddings_path, allow_pickle=False)
        if embeddings.shape != (len(chunks), manifest.embedding_dim):
            raise IndexCorruptError(f"index file {embeddings_path} has shape {embeddings.shape}, "
                                    f"expected {(len(chunks), manifest.embedding_dim)}; {hint}")
    return StoredIndex(manifest, chunks, faiss_index, embeddings)
