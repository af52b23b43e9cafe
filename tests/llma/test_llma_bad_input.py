"""Bad input to the accelerator's API: each kind fails at once with a ValueError saying what, and the
engine still decodes correctly afterwards (RELIABILITY.md lists every kind and where it is tested)."""
from __future__ import annotations

import math

import pytest

from llma import Engine, LLMAConfig
from llma.checks import MAX_REFERENCE_TOKENS
from llma_fixtures import tiny_llama

VOCAB = 97


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(tiny_llama(vocab=VOCAB, context=64), backend="hf")


SHORT = LLMAConfig(max_new_tokens=6)


@pytest.mark.parametrize("settings, message", [
    ({"k": 0}, "copy length k must be >= 1"),
    ({"k": -4}, "copy length k must be >= 1"),
    ({"k": 2.5}, "k must be an integer"),
    ({"min_n": 0}, "1 <= min_n <= max_n"),
    ({"min_n": 5, "max_n": 2}, "1 <= min_n <= max_n"),
    ({"max_new_tokens": 0}, "max_new_tokens must be >= 1"),
    ({"max_new_tokens": -1}, "max_new_tokens must be >= 1"),
    ({"max_new_tokens": "64"}, "max_new_tokens must be an integer"),
    ({"temperature": -0.5}, "temperature must be >= 0"),
    ({"temperature": math.nan}, "temperature must be a finite number"),
    ({"temperature": math.inf}, "temperature must be a finite number"),
    ({"temperature": 0.7, "top_p": 0.0}, "top_p must be in"),
    ({"temperature": 0.7, "top_p": math.nan}, "top_p must be a finite number"),
    ({"temperature": 0.7, "top_k": -1}, "top_k must be >= 0"),
    ({"seed": -3}, "seed must be >= 0"),
    ({"policy": "random"}, "policy must be one of"),
    ({"stop_sequences": ((),)}, "stop sequences must not be empty"),
    ({"max_reference_tokens": True}, "max_reference_tokens must be an integer"),
], ids=lambda v: str(v) if isinstance(v, dict) else "")
def test_bad_settings_raise_value_error_naming_the_setting(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LLMAConfig(**settings)


@pytest.mark.parametrize("prompt, message", [
    ([], "at least one token"),
    ([1, 2, VOCAB], rf"prompt\[2\] = {VOCAB} is not a token id"),
    ([1, -1], r"prompt\[1\] = -1 is not a token id"),
    ([1, 2.0], r"prompt\[1\] = 2.0 is not a token id"),
    ([5] * 65, "more than the model's context of 64"),
])
def test_bad_prompts_are_refused(engine: Engine, prompt: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        engine.generate(prompt, {}, SHORT)


@pytest.mark.parametrize("references, message", [
    ([[1, 2, 3]], "references must be a mapping"),
    ({"a": "1 2 3"}, "must be a sequence of token ids, got str"),
    ({"a": None}, "must be a sequence of token ids, got NoneType"),
    ({"a": [1, 2, 10**9]}, r"reference 'a'\[2\] = 1000000000 is not a token id"),
    ({"a": [1, -7]}, r"reference 'a'\[1\] = -7 is not a token id"),
    ({"output": [1, 2]}, "reserved for the answer itself"),
])
def test_bad_references_are_refused(engine: Engine, references: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        engine.generate([1, 2, 3], references, SHORT)


def test_a_million_token_reference_is_refused_at_once(engine: Engine) -> None:
    """Indexing 1M tokens would take ~4 s and 0.7 GB (measured); the limit is checked first."""
    huge = {"doc": [3] * 1_000_000}
    with pytest.raises(ValueError, match="more than 262,144 tokens"):
        engine.generate([1, 2, 3], huge, SHORT)
    assert MAX_REFERENCE_TOKENS == 262_144
    # The limit is a setting: raised, the same reference is accepted.
    result = engine.generate([1, 2, 3], huge, LLMAConfig(max_new_tokens=3, max_reference_tokens=2_000_000))
    assert len(result.tokens) == 3


def test_references_longer_than_the_context_are_fine(engine: Engine) -> None:
    """A reference is only copied from, never fed whole: it may be longer than the context (64)."""
    long_ref = {"doc": list(range(1, VOCAB)) * 3}
    with_refs = engine.generate([1, 2, 3], long_ref, LLMAConfig(max_new_tokens=20))
    plain = engine.generate([1, 2, 3], {}, LLMAConfig(max_new_tokens=20).greedy())
    assert with_refs.tokens == plain.tokens


def test_the_engine_still_decodes_after_refusing_bad_input(engine: Engine) -> None:
    before = engine.generate([4, 5, 6], {"a": [4, 5, 6, 7, 8]}, SHORT).tokens
    for bad in ({"a": [1, 10**9]}, [[1]], {"output": [1]}):
        with pytest.raises(ValueError):
            engine.generate([4, 5, 6], bad, SHORT)
    assert engine.generate([4, 5, 6], {"a": [4, 5, 6, 7, 8]}, SHORT).tokens == before
