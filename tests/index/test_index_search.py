"""Searching, persisting and reloading; the flat and HNSW index types."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import faiss  # noqa: E402
import pytest  # noqa: E402

from index import DEFAULT_EMBEDDER, DocumentIndex, SearchHit, build_index, load_index  # noqa: E402
from index.embedder import canonical_name  # noqa: E402

QUERIES = {
    "How long do cats sleep?": "cats.md",
    "What comes out of a volcano during an eruption?": "volcanoes.txt",
    "How do I make dough rise before baking?": "notes/bread.html",
}


@pytest.fixture
def built(corpus, tmp_path, embedder):
    report = build_index(corpus, tmp_path / "idx", embedder=embedder, progress=False)
    return report, load_index(tmp_path / "idx", embedder=embedder)


def test_report_and_index_contents(built):
    report, index = built
    assert sorted(report.added) == sorted(QUERIES.values())
    assert report.counts() == {"added": 3, "updated": 0, "removed": 0, "unchanged": 0, "skipped": 0}
    assert report.index_type == "flat-ip" and report.embedded_chunks == report.num_chunks == len(index)
    assert isinstance(index, DocumentIndex)
    assert {c.title for c in index.chunks} == {"Cats", "volcanoes", "Baking bread"}
    assert index.manifest.embedder == DEFAULT_EMBEDDER
    assert not any("secret" in c.text for c in index.chunks)


@pytest.mark.parametrize("query, source", QUERIES.items())
def test_relevant_chunk_comes_first(built, query, source):
    hits = built[1].search(query, k=3)
    assert isinstance(hits[0], SearchHit) and hits[0].chunk.source == source
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert 0.2 < hits[0].score <= 1.0 + 1e-5


def test_k_and_min_score(built):
    index = built[1]
    assert len(index.search("cats", k=100)) == len(index)
    hits = index.search("How long do cats sleep?", k=3, min_score=0.3)
    assert [h.chunk.source for h in hits] == ["cats.md"]
    with pytest.raises(ValueError):
        index.search("cats", k=0)
    for blank in ("", "  \n\t"):  # no meaning to compare with: an error, not the k nearest junk hits
        with pytest.raises(ValueError, match="search query is empty"):
            index.search(blank)


def test_reload_gives_identical_results(built, tmp_path):
    _, index = built
    again = load_index(tmp_path / "idx")  # embedder taken from the manifest
    assert again.embedder.name == index.embedder.name
    assert again.chunks == index.chunks
    for query in QUERIES:
        first, second = index.search(query, k=3), again.search(query, k=3)
        assert [h.chunk for h in first] == [h.chunk for h in second]
        assert [h.score for h in first] == pytest.approx([h.score for h in second], abs=1e-6)


def test_hnsw_path(corpus, tmp_path, embedder):
    report = build_index(corpus, tmp_path / "hnsw", embedder=embedder, progress=False, hnsw_threshold=2)
    assert report.index_type == "hnsw-ip"
    index = load_index(tmp_path / "hnsw")
    assert isinstance(index._faiss, faiss.IndexHNSWFlat)
    assert index._faiss.metric_type == faiss.METRIC_INNER_PRODUCT
    for query, source in QUERIES.items():
        assert index.search(query, k=1)[0].chunk.source == source
    # Raising the threshold again switches back to exact search without re-embedding.
    report = build_index(corpus, tmp_path / "hnsw", embedder=embedder, progress=False)
    assert (report.index_type, report.embedded_chunks) == ("flat-ip", 0)
    assert isinstance(load_index(tmp_path / "hnsw")._faiss, faiss.IndexFlatIP)


def test_embedder_aliases_are_one_name(embedder):
    from index.embedder import _bundled_model_dir

    assert canonical_name(None) == canonical_name("all-MiniLM-L6-v2") == DEFAULT_EMBEDDER
    assert canonical_name(str(_bundled_model_dir())) == DEFAULT_EMBEDDER
    assert embedder.embed(["x"]).shape == (1, embedder.dim)
