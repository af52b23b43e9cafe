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
from llma import LLMAConfig, LoadedModel, load_model  # noqa: E402
from rag import RAGPipeline, RagSettings  # noqa: E402

DOCS = {
    "with.md": "# The with statement\n\nThe with statement is used to wrap the execution of a block "
               "with methods defined by a context manager. This allows common try, except and finally "
               "usage patterns to be encapsulated for convenient reuse.\n",
    "dict.md": "# Dictionaries\n\nDictionaries preserve insertion order, meaning that keys will be "
               "produced in the same order they were added sequentially over the dictionary. "
               "Updating a key does not affect the order.\n",
    "volcano.txt": "A volcano is a rupture in the crust of a planet through which lava, volcanic ash and "
                   "gases escape from a magma chamber below the surface. Café owners near Etna sell "
                   "lava stones to tourists.\n",
}
QUESTIONS = ["What is the with statement used for?", "Do dictionaries preserve insertion order?",
             "What is a volcano?"]


def small(max_new_tokens: int = 20, **kwargs: object) -> RagSettings:
    """Settings for fast tests: few new tokens, and no answer cache unless asked (tests share it)."""
    kwargs.setdefault("use_answer_cache", False)
    return RagSettings(llma=LLMAConfig(max_new_tokens=max_new_tokens), **kwargs)  # type: ignore[arg-type]


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
