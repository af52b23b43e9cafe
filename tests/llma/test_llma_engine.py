"""The engine's settings: defaults, validation, and the reserved reference id."""
import pytest

from llma.engine import OUTPUT_REF, Engine, LLMAConfig
from llma.verifier import GreedyVerifier, SamplingVerifier
from llma_fixtures import tiny_llama


def test_defaults():
    c = LLMAConfig()
    assert (c.enabled, c.min_n, c.max_n, c.k, c.adaptive, c.policy) == (True, 2, 4, 8, True, "recent")
    assert c.copy_from_output and c.temperature == 0 and c.max_new_tokens == 256
    assert c.greedy().enabled is False and c.greedy().k == c.k


@pytest.mark.parametrize("kwargs", [
    {"k": 0}, {"k": -3}, {"min_n": 0}, {"min_n": 5, "max_n": 4}, {"policy": "best"},
    {"temperature": -0.1}, {"max_new_tokens": 0}, {"top_p": 0.0, "temperature": 1.0},
    {"top_k": -1, "temperature": 1.0}, {"stop_sequences": ((),)},
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
