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
    # each tried once (the steps' two and the prefill's two), then eager for good
    assert sorted(calls) == ["_post", "_pre", "_prefill_post", "_prefill_pre"]
    failures = [r.getMessage() for r in caplog.records if "torch.compile" in r.getMessage()]
    assert len(failures) == 4 and all("no C compiler found" in m and "traceback" not in m for m in failures)


def test_a_working_compile_runs_every_step(monkeypatch):
    model = tiny_llama().model
    calls, dynamic = [], {}

    def counting_compile(fn, **options):
        assert options["fullgraph"] is True
        dynamic[fn.__name__] = options["dynamic"]

        def compiled(*args):
            calls.append(fn.__name__)
            return fn(*args)
        return compiled

    monkeypatch.setattr(weights.torch, "compile", counting_compile)
    backend = StaticBackend(model, block=8, compile=True)
    assert torch.equal(_steps(backend), _steps(StaticBackend(model, block=8)))
    layers = len(model.model.layers)
    assert calls.count("_pre") == calls.count("_post") == 4 * layers  # four steps' layers
    assert calls.count("_prefill_pre") == calls.count("_prefill_post") == layers  # one prefill's
    # The steps' shapes static; the prefill's token count left to the compiler, marked dynamic.
    assert dynamic == {"_pre": False, "_post": False, "_prefill_pre": None, "_prefill_post": None}


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="torch.compile on CPU needs a C++ compiler")
@pytest.mark.slow
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
    w = compiled.weights
    assert all(f._compiled is not None for f in (w._pre_step, w._post_step, w._pre_prefill,
                                                 w._post_prefill))  # no fallback


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="torch.compile on CPU needs a C++ compiler")
def test_the_compiled_prefill_takes_every_prompt_length_in_one_compile():
    """The prefill's compiled functions: the eager prefill's logits (up to rounding) at three prompt
    lengths, from one compile each (the token count is a dynamic size, not a recompile per length)."""
    model = tiny_llama(context=256).model
    eager, compiled = StaticBackend(model, block=8), StaticBackend(model, block=8, compile=True)
    torch._dynamo.reset()
    counters = torch._dynamo.utils.counters
    counters.clear()
    for n in (70, 130, 200):  # three padded lengths (llma.backend.padded_length)
        prompt = [(7 * i) % 90 + 3 for i in range(n)]
        torch.testing.assert_close(compiled.prefill(prompt), eager.prefill(prompt), rtol=1e-5, atol=1e-5)
    assert counters["stats"]["unique_graphs"] == 2  # _prefill_pre and _prefill_post, once each
    assert compiled.weights._pre_prefill._compiled is not None
    assert compiled.weights._post_prefill._compiled is not None
