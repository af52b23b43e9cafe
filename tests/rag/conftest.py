"""Fixtures of the rag tests: the real bundled model (fp32, CPU) and a tiny index, built once."""
from __future__ import annotations

import os

# Before anything imports transformers: never reach for a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from index import DocumentIndex, build_index, load_index  # noqa: E402
from llma import LoadedModel, load_model  # noqa: E402
from rag import RAGPipeline  # noqa: E402
from rag_fixtures import DOCS  # noqa: E402


@pytest.fixture(scope="session")
def loaded() -> LoadedModel:
    return load_model(device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def docs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rag_docs")
    for name, text in DOCS.items():
        (root / name).write_text(text, encoding="utf-8")
    return root


@pytest.fixture(scope="session")
def index_dir(docs_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rag_index") / "idx"
    build_index(docs_dir, out, progress=False)
    return out


@pytest.fixture(scope="session")
def index(index_dir: Path) -> DocumentIndex:
    return load_index(index_dir)


@pytest.fixture(scope="session")
def pipe(index: DocumentIndex, loaded: LoadedModel) -> RAGPipeline:
    return RAGPipeline(index, loaded)
