"""Shared fixtures. Offline everywhere: no test may reach a model hub."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest


@pytest.fixture(scope="session")
def smollm():
    """The bundled default model, fp32 on CPU (the exact reference for identity tests)."""
    from llma.loading import load_model

    return load_model(device="cpu", dtype="float32")
