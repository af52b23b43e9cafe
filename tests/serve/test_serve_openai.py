"""The official `openai` client against a live server (tiny random model, CPU): plain, streaming,
stop, seed, n, Predicted Outputs, references and LLMA settings via extra_body, llma-rag, completions."""
from __future__ import annotations

import pytest

openai = pytest.importorskip("openai")

from serve_fixtures import API_KEY  # noqa: E402

from rag.pipeline import _final  # noqa: E402
from llma import LLMAConfig  # noqa: E402

MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Tell me about lava."}]


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=API_KEY, max_retries=0, timeout=120)


def _create(client, **kwargs):
    kwargs.setdefault("model", "tiny")
    kwargs.setdefault("messages", MESSAGES)
    kwargs.setdefault("max_tokens", 24)
    return client.chat.completions.create(**kwargs)


def test_models_lists_the_plain_model_first_then_llma_rag(client):
    assert [m.id for m in client.models.list()] == ["tiny", "llma-rag"]


def test_chat_answer_is_the_engines_greedy_answer(client, tiny_pipeline):
    reply = _create(client, temperature=0)
    alone = _final(tiny_pipeline.stream_chat(MESSAGES, (), LLMAConfig(max_new_tokens=24)))
    plain = _final(tiny_pipeline.stream_chat(MESSAGES, (), LLMAConfig(max_new_tokens=24).greedy()))
    assert reply.choices[0].message.content == alone.text == plain.text
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage.prompt_tokens == alone.stats["prompt_tokens"]
    assert reply.usage.completion_tokens == 24
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 24
    assert reply.usage.completion_tokens_details.accepted_prediction_tokens == 0
    assert reply.model == "tiny" and reply.object == "chat.completion"


def test_stream_gives_the_same_text_usage_last_and_done(client):
    whole = _create(client).choices[0].message.content
    chunks = list(_create(client, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 24
    assert all(c.usage is None for c in chunks[:-1])
    assert len({c.id for c in chunks}) == 1


def test_stream_without_include_usage_has_no_usage_chunk(client):
    chunks = list(_create(client, stream=True))
    assert all(c.choices for c in chunks) and all(getattr(c, "usage", None) is None for c in chunks)


def test_stop_string_ends_the_answer_before_it(client):
    whole = _create(client).choices[0].message.content
    stop = whole[len(whole) // 2: len(whole) // 2 + 3]
    cut = whole[: whole.index(stop)]
    reply = _create(client, stop=stop)
    assert reply.choices[0].message.content == cut and reply.choices[0].finish_reason == "stop"
    streamed = "".join(c.choices[0].delta.content or "" for c in _create(client, stop=[stop, "zzzq"], stream=True))
    assert streamed == cut


def test_seed_makes_sampling_repeatable(client):
    a = _create(client, temperature=1.0, seed=7).choices[0].message.content
    b = _create(client, temperature=1.0, seed=7).choices[0].message.content
    c = _create(client, temperature=1.0, seed=8).choices[0].message.content
    greedy = _create(client, temperature=0).choices[0].message.content
    assert a == b
    assert c != a and greedy not in (a, c)


def test_top_p_is_honoured(client):
    # top_p this small keeps only the top token: sampling then gives the greedy answer.
    greedy = _create(client, temperature=0).choices[0].message.content
    assert _create(client, temperature=1.0, top_p=1e-6, seed=3).choices[0].message.content == greedy


def test_n_choices(client):
    reply = _create(client, n=3, temperature=1.0, seed=11)
    texts = [c.message.content for c in reply.choices]
    assert [c.index for c in reply.choices] == [0, 1, 2] and len(set(texts)) == 3
    assert texts[0] == _create(client, temperature=1.0, seed=11).choices[0].message.content
    assert reply.usage.completion_tokens == 3 * 24
    greedy = _create(client, n=2, temperature=0)
    assert greedy.choices[0].message.content == greedy.choices[1].message.content
    streamed = list(_create(client, n=2, temperature=1.0, seed=11, stream=True))
    for i in range(2):
        assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices and c.choices[0].index == i) \
            == texts[i]


def test_prediction_is_lossless_and_counts_accepted_tokens(client):
    plain = _create(client, max_tokens=40)
    text = plain.choices[0].message.content
    predicted = _create(client, max_tokens=40, prediction={"type": "content", "content": text})
    assert predicted.choices[0].message.content == text
    details = predicted.usage.completion_tokens_details
    assert details.accepted_prediction_tokens > 20
    stats = predicted.model_extra["llma"]["choices"][0]["stats"]
    by_source = stats["drafts_by_source"]["prediction"]
    assert details.accepted_prediction_tokens == by_source["accepted"]
    assert details.rejected_prediction_tokens == by_source["proposed"] - by_source["accepted"]
    assert stats["forward_passes"] < plain.model_extra["llma"]["choices"][0]["stats"]["forward_passes"]
    # Text parts work as well; a prediction unrelated to the answer changes nothing either.
    parts = [{"type": "text", "text": text[:20]}, {"type": "text", "text": text[20:]}]
    assert _create(client, max_tokens=40, prediction={"type": "content", "content": parts}) \
        .choices[0].message.content == text
    other = _create(client, max_tokens=40, prediction={"type": "content", "content": "Volcanoes erupt lava. " * 5})
    assert other.choices[0].message.content == text
    streamed = "".join(c.choices[0].delta.content or "" for c in _create(
        client, max_tokens=40, stream=True, prediction={"type": "content", "content": text}))
    assert streamed == text


def test_seeded_sampling_with_a_prediction_gives_the_same_sample(client):
    """A seed fixes the sample (llma.verifier.SamplingVerifier): the same text with or without a
    prediction, with LLMA off, streamed or not; the prediction's tokens are still accepted."""
    sampled = dict(max_tokens=40, temperature=1.0, top_p=0.95, seed=21)
    text = _create(client, **sampled).choices[0].message.content
    predicted = _create(client, **sampled, prediction={"type": "content", "content": text})
    assert predicted.choices[0].message.content == text
    assert predicted.usage.completion_tokens_details.accepted_prediction_tokens > 10
    edited = text[: len(text) // 2] + " lava " + text[len(text) // 2 :]
    for kwargs in ({"prediction": {"type": "content", "content": edited}}, {"extra_body": {"llma": False}},
                   {"prediction": {"type": "content", "content": "Volcanoes erupt lava. " * 5}}):
        assert _create(client, **sampled, **kwargs).choices[0].message.content == text, kwargs
    streamed = "".join(c.choices[0].delta.content or "" for c in _create(
        client, **sampled, stream=True, prediction={"type": "content", "content": edited}))
    assert streamed == text
    assert _create(client, **{**sampled, "seed": 22}).choices[0].message.content != text


def test_references_via_extra_body_give_spans(client):
    text = _create(client, max_tokens=30).choices[0].message.content
    reply = _create(client, max_tokens=30, extra_body={"references": [{"id": "doc1", "text": "Intro. " + text}]})
    assert reply.choices[0].message.content == text
    ext = reply.model_extra["llma"]["choices"][0]
    spans = [s for s in ext["spans"] if s["source_id"] == "reference:doc1"]
    assert spans and sum(s["end"] - s["start"] for s in spans) > len(text) // 2
    for s in spans:
        assert text[s["start"]:s["end"]] == ("Intro. " + text)[s["source_start"]:s["source_end"]]
    streamed = list(_create(client, max_tokens=30, stream=True,
                            extra_body={"references": [{"id": "doc1", "text": "Intro. " + text}]}))
    span_chunks = [c.model_extra["llma"] for c in streamed if c.model_extra.get("llma", {}).get("spans")]
    assert span_chunks


def test_llma_false_and_settings_via_extra_body(client):
    text = _create(client, max_tokens=30).choices[0].message.content
    prediction = {"type": "content", "content": text}
    off = _create(client, max_tokens=30, prediction=prediction, extra_body={"llma": False})
    assert off.choices[0].message.content == text
    assert off.model_extra["llma"]["choices"][0]["stats"]["proposed_tokens"] == 0
    assert off.usage.completion_tokens_details.accepted_prediction_tokens == 0
    tuned = _create(client, max_tokens=30, prediction=prediction, extra_body={"llma": {"k": 2, "adaptive": False}})
    assert tuned.choices[0].message.content == text
    assert max(int(k) for k in tuned.model_extra["llma"]["choices"][0]["stats"]["accepted_hist"]) <= 2


def test_llma_rag_answers_from_the_index_and_lists_sources(client):
    reply = _create(client, model="llma-rag", messages=[{"role": "user", "content": "What is a volcano?"}])
    sources = reply.model_extra["llma"]["sources"]
    assert sources and "volcano" in sources[0]["text"]
    assert {"id", "title", "source", "score", "text"} <= set(sources[0])
    chunks = list(_create(client, model="llma-rag", stream=True,
                          messages=[{"role": "user", "content": "What is a volcano?"}]))
    assert chunks[0].model_extra["llma"]["sources"] == sources
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == reply.choices[0].message.content


def test_text_completions(client, tiny_pipeline):
    reply = client.completions.create(model="tiny", prompt="The volcano", max_tokens=12)
    alone = _final(tiny_pipeline.stream_text("The volcano", (), LLMAConfig(max_new_tokens=12)))
    assert reply.choices[0].text == alone.text and reply.object == "text_completion"
    assert reply.usage.completion_tokens == 12
    streamed = client.completions.create(model="tiny", prompt="The volcano", max_tokens=12, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == alone.text
    predicted = client.completions.create(model="tiny", prompt="The volcano", max_tokens=12,
                                          extra_body={"prediction": {"type": "content", "content": alone.text}})
    assert predicted.choices[0].text == alone.text
    assert predicted.usage.completion_tokens_details.accepted_prediction_tokens > 0
    two = client.completions.create(model="tiny", prompt=["The volcano", "A dictionary"], max_tokens=5)
    assert len(two.choices) == 2 and two.choices[0].text == reply.choices[0].text[: len(two.choices[0].text)]


def test_concurrent_requests_each_get_their_answer_alone(client, tiny_pipeline):
    """With the batch engine (the CPU default) the server decodes them together; either way each
    answer is the one its request gets alone."""
    from concurrent.futures import ThreadPoolExecutor

    questions = [[{"role": "user", "content": f"Question number {i}: what is lava?"}] for i in range(5)]
    alone = [_create(client, messages=q, max_tokens=16).choices[0].message.content for q in questions]
    with ThreadPoolExecutor(5) as pool:
        together = list(pool.map(lambda q: _create(client, messages=q, max_tokens=16).choices[0].message.content,
                                 questions))
    assert together == alone and len(set(alone)) > 1
    assert tiny_pipeline.engine.concurrent  # open_engine's CPU default: the batch engine
