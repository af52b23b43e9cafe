"""langchain-openai's ChatOpenAI against a live server: invoke, stream, stop, seed, a prediction,
references via extra_body, the llma-rag model, a wrong key."""
from __future__ import annotations

import pytest

langchain_openai = pytest.importorskip("langchain_openai")
openai = pytest.importorskip("openai")

from serve_fixtures import API_KEY  # noqa: E402

QUESTION = "Tell me about lava."


def _model(server, **kwargs):
    kwargs.setdefault("model", "tiny")
    kwargs.setdefault("max_tokens", 24)
    kwargs.setdefault("temperature", 0)
    return langchain_openai.ChatOpenAI(base_url=server.url + "/v1", api_key=API_KEY, max_retries=0, **kwargs)


def test_invoke_and_stream_agree(server):
    model = _model(server)
    reply = model.invoke(QUESTION)
    assert reply.content and reply.usage_metadata["output_tokens"] == 24
    assert reply.response_metadata["finish_reason"] == "length"
    assert "".join(chunk.content for chunk in model.stream(QUESTION)) == reply.content
    streamed_usage = _model(server, stream_usage=True)
    chunks = list(streamed_usage.stream(QUESTION))
    assert sum(c.usage_metadata["output_tokens"] for c in chunks if c.usage_metadata) == 24


def test_stop_and_seed(server):
    text = _model(server).invoke(QUESTION).content
    stop = text[len(text) // 2: len(text) // 2 + 3]
    assert _model(server, stop_sequences=[stop]).invoke(QUESTION).content == text[: text.index(stop)]
    assert _model(server).invoke(QUESTION, stop=[stop]).content == text[: text.index(stop)]
    sampled = _model(server, temperature=1.0, seed=5)
    assert sampled.invoke(QUESTION).content == sampled.invoke(QUESTION).content != text


def test_prediction_and_references(server):
    model = _model(server, max_tokens=40)
    text = model.invoke(QUESTION).content
    predicted = model.invoke(QUESTION, prediction={"type": "content", "content": text})
    assert predicted.content == text
    details = predicted.response_metadata["token_usage"]["completion_tokens_details"]
    assert details["accepted_prediction_tokens"] > 20
    with_refs = _model(server, max_tokens=40, extra_body={"references": [{"id": "d", "text": text}]})
    assert with_refs.invoke(QUESTION).content == text


def test_llma_rag_and_wrong_key(server):
    answer = _model(server, model="llma-rag").invoke("What is a volcano?")
    assert answer.content
    wrong = langchain_openai.ChatOpenAI(base_url=server.url + "/v1", api_key="nope", model="tiny", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.invoke(QUESTION)
