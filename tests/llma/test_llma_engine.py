"""The engine's settings: defaults, validation, and the reserved reference id."""
import pytest

from llma.engine import OUTPUT_REF, DraftDefaults, Engine, LLMAConfig
from llma.verifier import GreedyVerifier, SamplingVerifier
from llma_fixtures import tiny_llama


def test_defaults():
    c = LLMAConfig()
    # The drafting settings are left to the engine's backend (test_backend_drafting_defaults).
    assert (c.enabled, c.min_n, c.max_n, c.k, c.adaptive, c.policy) == (True, None, 4, None, None, None)
    assert c.copy_from_output and c.temperature == 0 and c.max_new_tokens == 256
    assert c.greedy().enabled is False and c.greedy().k == c.k


def test_backend_drafting_defaults():
    """The HF loop drafts short adaptive copies; a fixed-block backend fills its block, and also
    drafts from the answer history."""
    hf, static = Engine(tiny_llama(), "hf"), Engine(tiny_llama(), "static")
    assert hf.draft_defaults == DraftDefaults(min_n=2, k=8, adaptive=True, policy="recent", answer_history=False)
    assert static.draft_defaults == DraftDefaults(min_n=1, k=static.backend.block - 1, adaptive=False,
                                                  policy="longest", answer_history=True)
    resolved = hf.resolve(LLMAConfig())
    assert (resolved.min_n, resolved.k, resolved.adaptive, resolved.policy) == (2, 8, True, "recent")
    # What a config sets is kept; only its None fields are filled in.
    mine = LLMAConfig(min_n=3, k=5, adaptive=False, policy="first", answer_history=False)
    assert static.resolve(mine) == mine and hf.resolve(mine) == mine
    assert static.resolve(LLMAConfig(k=4)).k == 4 and static.resolve(LLMAConfig(k=4)).min_n == 1
    # A default min_n above an explicit max_n is capped to it (max_n=1 is a valid setting alone).
    assert hf.resolve(LLMAConfig(max_n=1)).min_n == 1
    proposer = static.proposer({"a": [1, 2, 3]}, LLMAConfig())
    assert (proposer.index.min_n, proposer.index.policy, proposer.copy.k, proposer.copy.adaptive) == \
        (1, "longest", static.backend.block - 1, False)
    with pytest.raises(ValueError, match="resolve"):
        LLMAConfig().copy_length()


@pytest.mark.parametrize("kwargs", [
    {"k": 0}, {"k": -3}, {"min_n": 0}, {"min_n": 5, "max_n": 4}, {"policy": "best"},
    {"temperature": -0.1}, {"max_new_tokens": 0}, {"top_p": 0.0, "temperature": 1.0},
    {"top_k": -1, "temperature": 1.0}, {"stop_sequences": ((),)}, {"adaptive": "yes"}, {"k": 2.5},
])
def test_bad_settings_raise_value_error(kwargs):
    with pytest.raises(ValueError):
        LLMAConfig(**kwargs)


def test_engine_parts_follow_the_config():
    engine = Engine(tiny_llama())
    assert isinstance(engine.verifier(LLMAConfig()), GreedyVerifier)
    assert isinstance(engine.verifier(LLMAConfig(temperature=0.8, seed=1)), SamplingVerifier)
    assert engine.proposer({}, LLMAConfig(enabled=False)) is None
    proposer = engine.proposer({"a": [1, 2]}, LLMAConfig())
    assert proposer.output_ref == OUTPUT_REF and proposer.copy.adaptive
    with pytest.raises(ValueError, match="reserved"):
        engine.proposer({OUTPUT_REF: [1]}, LLMAConfig())
    assert engine.context_length == 64


class _GraphBackend:
    """A CPU static backend that says it captures graphs (as on CUDA), counting its prefills and steps."""

    needs_warm_up = True

    def __init__(self, backend):
        self._backend, self.calls = backend, []

    def __getattr__(self, name):
        attr = getattr(self._backend, name)
        if name in ("prefill", "forward", "forward_argmax"):
            def counted(*args):
                self.calls.append(name)
                return attr(*args)
            return counted
        return attr


def test_warm_up_runs_a_short_generation_only_where_there_is_set_up():
    from llma.static import StaticBackend

    loaded = tiny_llama()
    assert Engine(loaded, "hf").warm_up() is False and Engine(loaded, "static").warm_up() is False
    backend = _GraphBackend(StaticBackend(loaded.model, block=8))
    engine = Engine(loaded, backend=backend)
    assert engine.warm_up() is True and backend.calls == ["prefill", "forward_argmax"]  # one step: its graph made
    prompt = [5, 6, 7, 8, 9]
    config = LLMAConfig(max_new_tokens=12)
    assert engine.generate(prompt, {"a": [7, 8, 9, 10]}, config).tokens == \
        Engine(loaded, "static").generate(prompt, None, config.greedy()).tokens  # nothing left behind
