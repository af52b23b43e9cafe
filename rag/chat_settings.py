"""How LangChain's standard chat-model parameters map onto the engine's `LLMAConfig`.

`rag.langchain.LLMAChatModel` takes them at construction and per call; this module holds the
mapping, the per-call argument check and the errors, so the model class stays about LangChain.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from llma import LLMAConfig

PROVIDER = "llma"

# LangChain's name -> LLMAConfig's field.
SETTINGS = {"max_tokens": "max_new_tokens", "temperature": "temperature", "top_p": "top_p",
            "top_k": "top_k", "seed": "seed", "frequency_penalty": "frequency_penalty",
            "presence_penalty": "presence_penalty", "repetition_penalty": "repetition_penalty"}
# What a call may pass besides `stop`: the settings, the model's name, LLMA's reference texts.
PER_CALL = frozenset({*SETTINGS, "model", "references"})
# LangChain's own flags that reach the model's methods with the call's arguments (read, then unused).
PLUMBING = frozenset({"stream"})


def check_model(asked: object, loaded: str) -> None:
    """Raises ValueError unless `asked` is `loaded`, the name the pipeline's model was loaded by."""
    if asked != loaded:
        raise ValueError(f"model {asked!r} is not the pipeline's model {loaded!r}: one pipeline serves "
                         "one model; build a RAGPipeline with the other model to use it")


def check_stop(stop: object) -> tuple[str, ...]:
    """Stop strings as a tuple; raises ValueError unless `stop` is a list of non-empty strings."""
    if isinstance(stop, (str, bytes)) or not isinstance(stop, Sequence) \
            or not all(isinstance(s, str) and s for s in stop):
        raise ValueError(f"stop must be a list of non-empty strings, got {stop!r}")
    return tuple(stop)


def check_call(kwargs: Mapping[str, Any]) -> None:
    """Raises TypeError naming the arguments of a call that the chat model does not take."""
    unknown = sorted(set(kwargs) - PER_CALL - PLUMBING)
    if unknown:
        raise TypeError(f"LLMAChatModel got unexpected keyword argument(s) {', '.join(unknown)}; "
                        f"per call it takes stop, {', '.join(sorted(PER_CALL))}")


def chosen(name: str, call: Mapping[str, Any], model: Mapping[str, Any], llma: LLMAConfig) -> Any:
    """The value a call decodes with for the standard setting `name`: the call's, else the
    model's, else `llma`'s (None anywhere means not set there)."""
    for layer in (call, model):
        if layer.get(name) is not None:
            return layer[name]
    return getattr(llma, SETTINGS[name])


def decoding_config(call: Mapping[str, Any], model: Mapping[str, Any], llma: LLMAConfig) -> LLMAConfig:
    """`llma` with the standard settings set over it (as `chosen` picks them). Raises ValueError
    for a bad value, naming the standard parameters given and the engine's own complaint."""
    given = {name: chosen(name, call, model, llma) for name in SETTINGS
             if call.get(name) is not None or model.get(name) is not None}
    try:
        return replace(llma, **{SETTINGS[name]: value for name, value in given.items()})
    except ValueError as err:
        asked = ", ".join(f"{name}={value!r}" for name, value in given.items())
        raise ValueError(f"bad decoding settings ({asked}): {err}") from err
