"""Shared fixtures and markers. Offline everywhere: no test may reach a model hub.

Markers (registered below):
- `slow`: takes over ~10 s on a 2-core CPU. `pytest -m "not slow" tests` gives a quick run; the
  default run (`make test`) runs everything.
- `cuda`: needs a CUDA GPU; skipped, with that reason, where torch sees none.
- `shared_data`: reads the evaluation sets in ../shared/data (next to the repository); such a test
  fails, naming the missing path, where they are absent. `@pytest.mark.shared_data("a/b.jsonl")`
  names the files it reads (checked before the test runs); the `shared_data` fixture gives the folder.
"""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test` runs one worker per core: one thread each
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"

import pytest


@pytest.fixture(scope="session")
def smollm():
    """The bundled default model, fp32 on CPU (the exact reference for identity tests)."""
    from llma.loading import load_model

    return load_model(device="cpu", dtype="float32")


MARKERS = {
    "slow": "takes over ~10 s on a 2-core CPU; deselect with -m 'not slow' for a quick run",
    "cuda": "needs a CUDA GPU; skipped where torch sees none",
    "shared_data(*paths)": "reads ../shared/data (the named files under it); fails, naming the path, "
                           "where it is absent",
}


def pytest_configure(config):
    for name, doc in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {doc}")


def pytest_collection_modifyitems(config, items):
    cuda = [item for item in items if item.get_closest_marker("cuda")]
    if cuda:
        import torch

        if not torch.cuda.is_available():
            skip = pytest.mark.skip(reason="needs a CUDA GPU")
            for item in cuda:
                item.add_marker(skip)


def _check_shared_data(item) -> None:
    """Fail (not skip) a `shared_data` test whose data are missing, naming what is missing."""
    marks = list(item.iter_markers("shared_data"))
    wanted = [SHARED_DATA / rel for mark in marks for rel in mark.args] or [SHARED_DATA]
    missing = [str(path) for path in wanted if not path.exists()]
    if missing:
        pytest.fail(f"{item.nodeid} reads the shared evaluation data, but {', '.join(missing)} "
                    f"is missing (expected ../shared/data next to the repository: {SHARED_DATA})",
                    pytrace=False)


def pytest_runtest_setup(item):
    if item.get_closest_marker("shared_data"):
        _check_shared_data(item)


@pytest.fixture
def shared_data(request) -> Path:
    """The shared evaluation data folder (../shared/data); the test fails where it is absent."""
    _check_shared_data(request.node)
    return SHARED_DATA
