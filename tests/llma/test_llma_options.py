"""EngineOptions: the engine's run-time choices, their defaults per device, and the environment read
only where a caller asks (`from_env`)."""
import pytest

from llma.engine import Engine
from llma.options import DEFAULT_PACKED_DRAFTS, ENV, EngineOptions
from llma_fixtures import tiny_llama


def test_the_measured_defaults_per_device():
    """CUDA with graphs: split-KV attention, DEFAULT_PACKED_DRAFTS packed, compiled; CPU: SDPA, one draft."""
    cuda = EngineOptions().resolve(cuda=True, graphs=True)
    assert (cuda.attention, cuda.compile, cuda.packed_drafts, cuda.cache_copies) == ("split", True, 4, 1)
    assert DEFAULT_PACKED_DRAFTS == 4 and cuda.drafts_per_step == 4
    assert EngineOptions().resolve(cuda=True, graphs=False).compile is False  # compiled under graphs only
    cpu = EngineOptions().resolve(cuda=False, graphs=False)
    assert (cpu.attention, cpu.compile, cpu.packed_drafts) == ("sdpa", False, 0)
    assert EngineOptions(cache_copies=4).resolve(True, True).packed_drafts == 0
    unpacked = EngineOptions(packed_drafts=0).resolve(True, True)
    assert (unpacked.attention, unpacked.compile) == ("flash", False)  # one draft: flash attention
    assert EngineOptions(attention="flash").resolve(True, True).packed_drafts == 0  # flash reads no draft slots
    assert EngineOptions(compile=False).resolve(True, True).compile is False


def test_from_env_reads_the_variables_it_names_and_given_fields_win():
    env = {"LLMA_BACKEND": "static", "LLMA_STATIC_ATTENTION": "split", "LLMA_STATIC_COMPILE": "0",
           "LLMA_STATIC_TREE": "6", "LLMA_STATIC_ROWS": "1", "UNRELATED": "x"}
    options = EngineOptions.from_env(env)
    assert options == EngineOptions("static", "split", False, 6, 1)
    assert EngineOptions.from_env(env, backend="hf").backend == "hf"
    assert EngineOptions.from_env({}) == EngineOptions()
    assert set(ENV) == {"LLMA_BACKEND", "LLMA_STATIC_ATTENTION", "LLMA_STATIC_COMPILE", "LLMA_STATIC_TREE",
                        "LLMA_STATIC_ROWS", "LLMA_BATCH_SLOTS", "LLMA_WEIGHTS", "LLMA_CPU_GLUE",
                        "LLMA_PROMPT_DTYPE", "LLMA_PREFIX_CACHE_MB"}


def test_batch_slots_default_to_the_batch_engine_on_cpu_only():
    assert EngineOptions().batch_default(cuda=False) == 8 and EngineOptions().batch_default(cuda=True) == 0
    assert EngineOptions(backend="hf").batch_default(cuda=False) == 0  # a named backend: one at a time
    assert EngineOptions.from_env({"LLMA_BATCH_SLOTS": "3"}).batch_default(cuda=True) == 3
    with pytest.raises(ValueError, match="LLMA_BATCH_SLOTS"):
        EngineOptions.from_env({"LLMA_BATCH_SLOTS": "many"})


@pytest.mark.parametrize("env, match", [
    ({"LLMA_STATIC_TREE": "six"}, "LLMA_STATIC_TREE"),
    ({"LLMA_STATIC_ROWS": "many"}, "LLMA_STATIC_ROWS"),
    ({"LLMA_STATIC_COMPILE": "yes"}, "LLMA_STATIC_COMPILE"),
    ({"LLMA_BACKEND": "fast"}, "LLMA_BACKEND=fast"),
    ({"LLMA_STATIC_ATTENTION": "magic"}, "attention must be one of"),
])
def test_a_bad_variable_is_a_clear_error_naming_it(env, match):
    with pytest.raises(ValueError, match=match):
        EngineOptions.from_env(env)


def test_bad_fields_are_refused():
    for bad in ({"backend": "gpu"}, {"packed_drafts": -1}, {"cache_copies": 0}, {"compile": "yes"},
                {"packed_drafts": True}):
        with pytest.raises(ValueError):
            EngineOptions(**bad)


def test_the_engine_never_reads_the_environment(monkeypatch):
    """The same `Engine(loaded)` runs the same backend whatever the shell says."""
    loaded = tiny_llama()
    monkeypatch.setenv("LLMA_BACKEND", "static")
    monkeypatch.setenv("LLMA_STATIC_TREE", "3")
    assert Engine(loaded).backend.name == "hf"  # auto on CPU
    engine = Engine(loaded, options=EngineOptions.from_env({"LLMA_BACKEND": "static", "LLMA_STATIC_TREE": "3"}))
    assert engine.backend.name == "static+tree3" and engine.options.packed_drafts == 3
