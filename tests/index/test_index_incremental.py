"""Re-running build_index only embeds what changed."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from index import Embedder, build_index, load_index  # noqa: E402
from index import store  # noqa: E402


@pytest.fixture
def embedded(monkeypatch):
    """Every text passed to Embedder.embed, in order."""
    seen: list[str] = []
    original = Embedder.embed

    def counting(self, texts, progress=False):
        seen.extend(texts)
        return original(self, texts, progress=progress)

    monkeypatch.setattr(Embedder, "embed", counting)
    return seen


def _vectors_by_chunk(idx):
    stored = store.load(idx, with_embeddings=True)
    return {c.id: stored.embeddings[i] for i, c in enumerate(stored.chunks)}


def test_modify_remove_add(corpus, tmp_path, embedder, embedded):
    idx = tmp_path / "idx"
    build_index(corpus, idx, embedder=embedder, progress=False)
    before = _vectors_by_chunk(idx)
    bread_ids = load_index(idx).manifest.files["notes/bread.html"].chunk_ids
    embedded.clear()

    (corpus / "cats.md").write_text("# Cats\n\nCats are obligate carnivores that hunt mice.\n")
    (corpus / "volcanoes.txt").unlink()
    (corpus / "new" / "rivers.txt").parent.mkdir()
    (corpus / "new" / "rivers.txt").write_text("The Nile is the longest river in Africa.")
    report = build_index(corpus, idx, embedder=embedder, progress=False)

    assert report.counts() == {"added": 1, "updated": 1, "removed": 1, "unchanged": 1, "skipped": 0}
    assert (report.added, report.updated, report.removed, report.unchanged) == (
        ["new/rivers.txt"], ["cats.md"], ["volcanoes.txt"], ["notes/bread.html"])
    # Only the changed and the new file were embedded.
    assert sorted(embedded) == sorted([
        "# Cats\n\nCats are obligate carnivores that hunt mice.",
        "The Nile is the longest river in Africa."])
    assert report.embedded_chunks == 2
    index = load_index(idx)
    assert {c.source for c in index.chunks} == {"cats.md", "new/rivers.txt", "notes/bread.html"}
    after = _vectors_by_chunk(idx)
    for cid in bread_ids:  # the unchanged file kept its vectors
        np.testing.assert_array_equal(after[cid], before[cid])
    assert index.search("Which river is the longest?", k=1)[0].chunk.source == "new/rivers.txt"
    assert index.search("volcanic ash and lava", k=1)[0].chunk.source != "volcanoes.txt"


def test_nothing_changed_is_a_cheap_no_op(corpus, tmp_path, embedder, embedded):
    idx = tmp_path / "idx"
    build_index(corpus, idx, embedder=embedder, progress=False)
    manifest_before = (idx / "manifest.json").read_bytes()
    files_before = sorted(p.name for p in idx.iterdir())
    embedded.clear()
    report = build_index(corpus, idx, embedder=embedder, progress=False)
    assert embedded == []
    assert report.counts()["unchanged"] == 3 and report.embedded_chunks == 0
    assert (idx / "manifest.json").read_bytes() == manifest_before
    assert sorted(p.name for p in idx.iterdir()) == files_before


def test_changed_chunk_settings_reembed_everything(corpus, tmp_path, embedder, embedded):
    idx = tmp_path / "idx"
    first = build_index(corpus, idx, embedder=embedder, progress=False)
    embedded.clear()
    report = build_index(corpus, idx, embedder=embedder, chunk_size=20, chunk_overlap=5, progress=False)
    assert len(report.updated) == 3 and not report.unchanged
    assert report.num_chunks > first.num_chunks and len(embedded) == report.num_chunks
    assert load_index(idx).manifest.chunk_size == 20


def test_index_inside_docs_folder_is_not_ingested(corpus, embedder):
    report = build_index(corpus, corpus / "index", embedder=embedder, progress=False)
    again = build_index(corpus, corpus / "index", embedder=embedder, progress=False)
    assert again.counts()["unchanged"] == len(report.added) == 3 and not again.skipped
