"""torch.compile in the static backend (llma.static.weights.Compiled): used when it works, and when
compiling fails the backend logs why once and runs the same steps eagerly (CPU, with a stand-in for
torch.compile), and the real compile on CPU (on the GPU: benchmarks/GPU.md)."""
import logging
import shutil

import pytest
import torch

import llma.static.weights as weights
from llma.engine import Engine, LLMAConfig
from llma.static import StaticBackend
from llma_fixtures import tiny_llama


def _steps(backend: StaticBackend) -> torch.Tensor:
    backend.prefill(list(range(3, 20)))
    return torch.cat([backend.forward([t]) for t in (40, 41, 42)] + [backend.forward([43, 44, 45])])


def test_a_failing_compile_falls_back_to_the_same_eager_steps(monkeypatch, caplog):
    model = tiny_llama().model
    eager = _steps(StaticBackend(model, block=8))
    calls = []

    def failing_compile(fn, **options):
        def compiled(*args):
            calls.append(fn.__name__)
            raise RuntimeError("no C compiler found\nlong traceback")
        return compiled

    monkeypatch.setattr(weights.torch, "compile", failing_compile)
    backend = StaticBackend(model, block=8, compile=True)
    with caplog.at_level(logging.WARNING, logger="llma.static.weights"):
        assert torch.equal(_steps(backend), eager)
    assert sorted(set(calls)) == ["_post", "_pre"] and len(calls) == 2  # each tried once, then eager for good
    failures = [r.getMessage() for r in caplog.records if "torch.compile" in r.getMessage()]
    assert len(failures) == 2 and all("no C compiler found" in m and "traceback" not in m for m in failures)


def test_a_working_compile_runs_every_step(monkeypatch):
    model = tiny_llama().model
    calls = []

    def counting_compile(fn, **options):
        assert options == {"fullgraph": True, "dynamic": False}

        def compiled(*args):
            calls.append(fn.__name__)
            return fn(*args)
        return compiled

    monkeypatch.setattr(weights.torch, "compile", counting_compile)
    backend = StaticBackend(model, block=8, compile=True)
    assert torch.equal(_steps(backend), _steps(StaticBackend(model, block=8)))
    layers = len(model.model.layers)
    assert calls.count("_pre") == calls.count("_post") == 4 * layers  # the steps' layers; the prefill's not


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="torch.compile on CPU needs a C++ compiler")
def test_the_real_compile_gives_greedy_and_llma_equals_its_greedy():
    """The real torch.compile (inductor, CPU): greedy through the compiled steps gives the eager
    greedy's tokens, and LLMA through them equals that greedy."""
    loaded = tiny_llama()
    compiled = StaticBackend(loaded.model, block=8, compile=True)
    prompt, config = list(range(5, 25)), LLMAConfig(max_new_tokens=30)
    greedy = Engine(loaded, backend=StaticBackend(loaded.model, block=8)).generate(prompt, None, config.greedy())
    engine = Engine(loaded, backend=compiled)
    assert engine.generate(prompt, None, config.greedy()).tokens == greedy.tokens
    llma = engine.generate(prompt, {"answer": greedy.tokens[2:], "noise": list(range(60, 90))}, config)
    assert llma.tokens == greedy.tokens and llma.stats.accepted_tokens > 10
    assert compiled._pre_c._compiled is not None and compiled._post_c._compiled is not None  # no fallback
