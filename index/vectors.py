"""FAISS index construction (inner product on unit vectors = cosine similarity)."""
from __future__ import annotations

import faiss
import numpy as np

# Exact search (IndexFlatIP) scans every vector: at 50,000 chunks x 384 floats
# that is ~77 MB per query, about 10 ms on one CPU core, still fine for an
# interactive app. Beyond that, HNSW's sub-linear search is worth its
# approximate recall and its build time.
HNSW_THRESHOLD = 50_000
HNSW_NEIGHBORS = 32  # graph degree M: the usual recall/memory balance for ~400-d vectors
HNSW_EF_CONSTRUCTION = 200  # build-time beam: higher = better graph, slower build
HNSW_EF_SEARCH = 128  # query-time beam; stored in the index file by faiss.write_index

FLAT = "flat-ip"
HNSW = "hnsw-ip"


def index_type_for(num_vectors: int, hnsw_threshold: int = HNSW_THRESHOLD) -> str:
    return HNSW if num_vectors >= hnsw_threshold else FLAT


def build_faiss(embeddings: np.ndarray,
                hnsw_threshold: int = HNSW_THRESHOLD) -> tuple[faiss.Index, str]:
    """An index holding `embeddings` (row i = chunk i) and its type name."""
    dim = embeddings.shape[1]
    kind = index_type_for(len(embeddings), hnsw_threshold)
    if kind == FLAT:
        index: faiss.Index = faiss.IndexFlatIP(dim)
    else:
        index = faiss.IndexHNSWFlat(dim, HNSW_NEIGHBORS, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index.hnsw.efSearch = HNSW_EF_SEARCH
    index.add(np.ascontiguousarray(embeddings, dtype=np.float32))
    return index, kind
