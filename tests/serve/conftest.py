"""Fixtures of the server tests: a tiny model folder, a tiny index, one live server for the module."""
from __future__ import annotations

from pathlib import Path

import pytest

from serve_fixtures import API_KEY, DOCS, LiveServer, save_tiny_model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def serve_index_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from index import build_index

    docs = tmp_path_factory.mktemp("serve_docs")
    for name, text in DOCS.items():
        (docs / name).write_text(text, encoding="utf-8")
    out = tmp_path_factory.mktemp("serve_index") / "idx"
    build_index(docs, out, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_pipeline(tiny_model_dir: Path, serve_index_dir: Path):
    from index import load_index
    from llma import load_model
    from rag import RAGPipeline

    return RAGPipeline(load_index(serve_index_dir), load_model(str(tiny_model_dir), device="cpu", dtype="float32"))


@pytest.fixture(scope="session")
def server(tiny_pipeline):
    """The app over the tiny pipeline, with an API key and small limits, on a free port."""
    from rag.serve import Limits, build_app

    limits = Limits(max_body_bytes=200_000, max_prompt_tokens=1500, max_tokens=400, max_n=4,
                    max_reference_chars=20_000)
    with LiveServer(build_app(tiny_pipeline, API_KEY, limits, model="tiny")) as live:
        yield live
