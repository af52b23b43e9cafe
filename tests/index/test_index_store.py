"""Atomic writes, and clear errors for missing, corrupt or mismatched indexes."""
from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import pytest  # noqa: E402

from index import (EmbedderMismatchError, IndexCorruptError, IndexingError,  # noqa: E402
                   IndexMissingError, build_index, load_index)
from index import store  # noqa: E402

FIX = "python -m index build"


@pytest.fixture
def idx(corpus, tmp_path, embedder):
    build_index(corpus, tmp_path / "idx", embedder=embedder, progress=False)
    return tmp_path / "idx"


def _data_file(idx, role):
    return idx / json.loads((idx / "manifest.json").read_text())["data_files"][role]["name"]


@pytest.mark.parametrize("failing", ["_write_faiss", "_write_chunks", "_write_embeddings",
                                     "_write_manifest"])
def test_crash_mid_write_keeps_previous_index(corpus, idx, embedder, monkeypatch, failing):
    before = load_index(idx)
    (corpus / "cats.md").write_text("# Dogs\n\nDogs bark at the mail carrier.\n")

    def crash(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(store, failing, crash)
    with pytest.raises(OSError, match="simulated"):
        build_index(corpus, idx, embedder=embedder, progress=False)
    after = load_index(idx)
    assert after.chunks == before.chunks
    assert after.search("cats", k=1)[0].chunk.title == "Cats"

    monkeypatch.undo()  # the next build succeeds and cleans up the crashed files
    report = build_index(corpus, idx, embedder=embedder, progress=False)
    assert report.updated == ["cats.md"]
    live = {entry["name"] for entry in json.loads((idx / "manifest.json").read_text())["data_files"].values()}
    assert {p.name for p in idx.iterdir()} == live | {"manifest.json", store.LOCK}


def test_an_unchanged_rebuild_removes_what_a_killed_build_left(corpus, idx, embedder):
    """A build SIGKILLed between its commit and its cleanup leaves the old generation's files; the
    next build finds nothing to re-embed and must still remove them."""
    before = sorted(p.name for p in idx.iterdir())
    leftovers = ["chunks-1-dead.jsonl", "index-1-dead.faiss", "embeddings-1-dead.npy",
                 "manifest.json.tmp-1-dead"]
    for name in leftovers:
        (idx / name).write_bytes(b"left by a killed build")
    report = build_index(corpus, idx, embedder=embedder, progress=False)
    assert report.added == report.updated == report.removed == []
    assert sorted(p.name for p in idx.iterdir()) == before
    assert len(load_index(idx)) == report.num_chunks


def test_missing_folder_and_manifest(idx, tmp_path):
    with pytest.raises(IndexMissingError, match=f"no index folder .*{FIX}"):
        load_index(tmp_path / "nowhere")
    (idx / "manifest.json").unlink()
    with pytest.raises(IndexMissingError, match=f"manifest.json is missing.*{FIX}"):
        load_index(idx)


def test_corrupt_faiss_file(corpus, idx):
    path = _data_file(idx, "faiss")
    path.write_bytes(b"garbage" * 10)
    with pytest.raises(IndexCorruptError, match=f"{path.name} is corrupt.*{FIX}") as info:
        load_index(idx)
    # The fix names the documents folder the index was built from.
    assert f"{FIX} {corpus.resolve()} --out {idx}" in str(info.value)


def test_truncated_chunks_file(idx):
    path = _data_file(idx, "chunks")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(IndexCorruptError, match=f"{path.name}.*{FIX}"):
        load_index(idx)


def test_missing_data_file_and_bad_manifest(idx):
    manifest = idx / "manifest.json"
    raw = json.loads(manifest.read_text())
    raw["num_chunks"] += 1
    manifest.write_text(json.dumps(raw))
    with pytest.raises(IndexCorruptError, match="disagree"):
        load_index(idx)
    manifest.write_text("{ not json")
    with pytest.raises(IndexCorruptError, match="manifest.json is unreadable"):
        load_index(idx)


def test_corrupt_index_is_rebuilt_by_build(corpus, idx, embedder):
    _data_file(idx, "faiss").write_bytes(b"junk")
    report = build_index(corpus, idx, embedder=embedder, progress=False)
    assert len(report.added) == 3 and len(load_index(idx)) == report.num_chunks


def test_embedder_mismatch_is_refused(idx):
    with pytest.raises(EmbedderMismatchError, match="was built with embedder .*all-MiniLM-L6-v2"):
        load_index(idx, embedder="sentence-transformers/all-mpnet-base-v2")
    assert issubclass(EmbedderMismatchError, IndexingError)
    assert load_index(idx, embedder="all-MiniLM-L6-v2").search("cats", k=1)


def test_concurrent_builds_into_one_folder_both_succeed(corpus, tmp_path, embedder):
    with ThreadPoolExecutor(2) as pool:
        reports = list(pool.map(lambda _: build_index(corpus, tmp_path / "idx", embedder=embedder,
                                                      progress=False), range(2)))
    assert sorted(len(r.added) for r in reports) == [0, 3]
    assert len(load_index(tmp_path / "idx")) == reports[0].num_chunks
