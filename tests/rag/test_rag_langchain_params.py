"""LLMAChatModel's standard LangChain parameters: construction, per call, bind, tracing, refusals."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.messages import HumanMessage
from pydantic import ValidationError

from llma import LLMAConfig
from rag import Answer, AnswerDelta, RAGPipeline
from rag.langchain import LLMAChatModel

MESSAGES = [HumanMessage("Name three colours.")]


class Spy:
    """Stands in for `pipeline.stream_messages`: records each call's config and stop strings, then
    decodes for real, or (`decode` False) answers an empty reply at once."""

    def __init__(self, pipe: RAGPipeline) -> None:
        self.real = pipe.stream_messages
        self.calls: list[tuple[LLMAConfig, tuple[str, ...]]] = []
        self.decode = True

    def __call__(self, messages: Any, references: Any, config: LLMAConfig,
                 stop: Any) -> Iterator[AnswerDelta]:
        self.calls.append((config, tuple(stop)))
        if self.decode:
            return self.real(messages, references, config, stop)
        answer = Answer(text="", spans=[], passages=[], stats={"prompt_tokens": 0, "tokens": 0}, steps=[],
                        stop_reason="spy")
        return iter([AnswerDelta(text="", done=True, answer=answer)])


@pytest.fixture
def spy(pipe: RAGPipeline, monkeypatch: pytest.MonkeyPatch) -> Spy:
    recorder = Spy(pipe)
    monkeypatch.setattr(pipe, "stream_messages", recorder)
    return recorder


def test_constructor_parameters_set_the_engine_settings(pipe: RAGPipeline, spy: Spy) -> None:
    model = LLMAChatModel(pipeline=pipe, max_tokens=3, temperature=0.7, top_p=0.9, top_k=5, seed=11,
                          stop=["###"], llma=LLMAConfig(max_new_tokens=50, k=4))
    reply = model.invoke(MESSAGES)
    config = spy.calls[-1][0]
    stop = spy.calls[-1][1]
    settings = (config.max_new_tokens, config.temperature, config.top_p, config.top_k, config.seed)
    assert settings == (3, 0.7, 0.9, 5, 11)
    assert config.k == 4 and stop == ("###",)  # llma's own settings stay
    assert reply.usage_metadata is not None and reply.usage_metadata["output_tokens"] <= 3
    assert model.invoke(MESSAGES).content == reply.content  # seeded sampling repeats itself
    spy.decode = False
    LLMAChatModel(pipeline=pipe, llma=LLMAConfig(max_new_tokens=2)).invoke(MESSAGES)
    assert spy.calls[-1] == (LLMAConfig(max_new_tokens=2), ())  # None everywhere: llma as given


def test_per_call_and_bound_parameters_override_the_models(pipe: RAGPipeline, spy: Spy) -> None:
    model = LLMAChatModel(pipeline=pipe, max_tokens=4, stop=["###"])
    full = model.invoke(MESSAGES)
    short = model.invoke(MESSAGES, max_tokens=2, stop=["@@@"])
    assert spy.calls[-1][0].max_new_tokens == 2 and spy.calls[-1][1] == ("@@@",)
    assert short.usage_metadata is not None and short.usage_metadata["output_tokens"] == 2
    assert full.content.startswith(short.content) and len(short.content) < len(full.content)
    bound = model.bind(max_tokens=1, temperature=0.5, seed=3)
    assert bound.invoke(MESSAGES).usage_metadata["output_tokens"] == 1  # type: ignore[index]
    config = spy.calls[-1][0]
    assert (config.max_new_tokens, config.temperature, config.seed) == (1, 0.5, 3)
    streamed = list(model.stream(MESSAGES, max_tokens=2))
    assert "".join(str(c.content) for c in streamed) == short.content
    spy.decode = False
    model.invoke(MESSAGES, max_tokens=None, stop=[])  # None: the model's value; []: no stop strings
    assert spy.calls[-1][0].max_new_tokens == 4 and spy.calls[-1][1] == ()


def test_tracing_parameters_report_the_call_settings(pipe: RAGPipeline) -> None:
    model = LLMAChatModel(pipeline=pipe, max_tokens=7, stop=["###"])
    assert model.model == pipe.loaded.name
    assert model._get_ls_params() == {"ls_provider": "llma", "ls_model_name": pipe.loaded.name,
                                      "ls_model_type": "chat", "ls_temperature": 0.0, "ls_max_tokens": 7,
                                      "ls_stop": ["###"]}
    call = model._get_ls_params(stop=["!"], max_tokens=2, temperature=0.3, model="other")
    assert (call["ls_stop"], call["ls_max_tokens"], call["ls_temperature"]) == (["!"], 2, 0.3)
    assert call["ls_model_name"] == "other"
    plain = LLMAChatModel(pipeline=pipe, llma=LLMAConfig(max_new_tokens=9, temperature=0.2))
    assert plain._get_ls_params()["ls_max_tokens"] == 9 and "ls_stop" not in plain._get_ls_params()
    assert plain._get_ls_params()["ls_temperature"] == 0.2
    assert model.invoke(MESSAGES, max_tokens=1).response_metadata["model_name"] == pipe.loaded.name


@pytest.mark.parametrize("kwargs, message", [
    ({"timeout": 5}, "timeout"),
    ({"max_retries": 2}, "max_retries"),
    ({"temprature": 0.5}, "temprature"),
    ({"max_tokens": 0}, r"max_tokens=0.*max_new_tokens must be >= 1"),
    ({"temperature": -1.0}, r"temperature=-1.0.*must be >= 0"),
    ({"temperature": 0.5, "top_p": 1.5}, r"top_p must be in \(0, 1\]"),
    ({"stop": ["ok", ""]}, "stop must be a list of non-empty strings"),
    ({"model": "gpt-4o"}, "'gpt-4o' is not the pipeline's model"),
])
def test_bad_constructor_arguments_are_refused(pipe: RAGPipeline, kwargs: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        LLMAChatModel(pipeline=pipe, **kwargs)


def test_bad_call_arguments_are_refused_before_decoding(pipe: RAGPipeline, spy: Spy) -> None:
    model = LLMAChatModel(pipeline=pipe, max_tokens=2, model=pipe.loaded.name)
    with pytest.raises(TypeError, match="unexpected keyword argument.*max_token, temprature"):
        model.invoke(MESSAGES, max_token=1, temprature=0.0)
    with pytest.raises(TypeError, match="max_new_tokens"):
        list(model.stream(MESSAGES, max_new_tokens=1))
    with pytest.raises(ValueError, match=r"bad decoding settings \(max_tokens=-3\)"):
        model.invoke(MESSAGES, max_tokens=-3)
    with pytest.raises(ValueError, match="stop must be a list of non-empty strings, got 'x'"):
        model.invoke(MESSAGES, stop="x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'other' is not the pipeline's model"):
        model.bind(model="other").invoke(MESSAGES)
    assert spy.calls == []
    assert model.invoke(MESSAGES, model=pipe.loaded.name, stream=False).content  # its own name: fine


def test_penalties_are_standard_parameters(pipe: RAGPipeline, spy: Spy) -> None:
    spy.decode = False
    model = LLMAChatModel(pipeline=pipe, frequency_penalty=0.5, presence_penalty=0.25)
    model.invoke(MESSAGES)
    config = spy.calls[-1][0]
    assert (config.frequency_penalty, config.presence_penalty, config.repetition_penalty) == (0.5, 0.25, 1.0)
    model.bind(presence_penalty=1.0, repetition_penalty=1.3).invoke(MESSAGES)
    config = spy.calls[-1][0]
    assert (config.frequency_penalty, config.presence_penalty, config.repetition_penalty) == (0.5, 1.0, 1.3)
    with pytest.raises(ValidationError, match="repetition_penalty must be > 0"):
        LLMAChatModel(pipeline=pipe, repetition_penalty=0.0)
    with pytest.raises(ValueError, match=r"frequency_penalty=inf.*must be a finite number"):
        model.invoke(MESSAGES, frequency_penalty=float("inf"))
