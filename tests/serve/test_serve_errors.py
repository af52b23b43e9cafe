"""Bad requests, the API key, the limits and a client leaving mid-stream, against a live server."""
from __future__ import annotations

import json
import time

import httpx
import pytest

openai = pytest.importorskip("openai")

from serve_fixtures import API_KEY  # noqa: E402

AUTH = {"Authorization": f"Bearer {API_KEY}"}
MESSAGES = [{"role": "user", "content": "Tell me about lava."}]


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=API_KEY, max_retries=0, timeout=120)


def _error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]
    return body["error"]


def _post(server, body: object, path: str = "/v1/chat/completions", **kwargs) -> httpx.Response:
    kwargs.setdefault("headers", AUTH)
    return httpx.post(server.url + path, json=body, timeout=60, **kwargs)


@pytest.mark.parametrize("change, param", [
    ({"temperature": 5}, "temperature"),
    ({"temperature": "hot"}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"n": 0}, "n"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"seed": -1}, "seed"),
    ({"stop": [""]}, "stop"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages.0.role"),
    ({"prediction": {"type": "image", "content": "x"}}, "prediction.type"),
    ({"references": [{"id": "a"}]}, "references.0.text"),
    ({"llma": {"k": 0}}, "llma.k"),
    ({"llma": {"bogus": 1}}, "llma.bogus"),
])
def test_bad_values_get_openai_shaped_400s(client, change, param):
    body = {"model": "tiny", "messages": MESSAGES, "max_tokens": 4, **change}
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(**{k: v for k, v in body.items() if k not in ("references", "llma")},
                                       extra_body={k: v for k, v in body.items() if k in ("references", "llma")})
    assert err.value.status_code == 400
    assert err.value.body["param"] == param and err.value.body["type"] == "invalid_request_error"


def test_unknown_routes_and_methods_get_the_same_error_shape(server):
    assert _error(httpx.get(server.url + "/v1/nothing", headers=AUTH), 404)["code"] == "not_found"
    assert _error(httpx.get(server.url + "/v1/chat/completions", headers=AUTH), 405)["code"] == "method_not_allowed"


def test_missing_messages_and_bad_json(server):
    assert _error(_post(server, {"model": "tiny"}), 400)["param"] == "messages"
    bad = httpx.post(server.url + "/v1/chat/completions", content=b"{not json", headers=AUTH, timeout=30)
    assert _error(bad, 400)["code"] == "invalid_json"
    assert _error(_post(server, [1, 2]), 400)["code"] == "invalid_json"


def test_unknown_parameters_are_ignored_and_unsupported_ones_refused(server, client):
    ok = _post(server, {"model": "tiny", "messages": MESSAGES, "max_tokens": 3, "frequency_penalty": 0.1,
                        "user": "u1", "something_new": {"a": 1}})
    assert ok.status_code == 200
    assert _error(_post(server, {"model": "tiny", "messages": MESSAGES, "tools": [{"type": "function"}]}),
                  400)["param"] == "tools"
    assert _error(_post(server, {"model": "tiny", "messages": MESSAGES, "logprobs": True}), 400)["param"] == "logprobs"
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert err.value.body["code"] == "model_not_found"


def test_api_key_is_required_on_v1_and_metrics_not_health(server):
    with pytest.raises(openai.AuthenticationError) as err:
        openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0).models.list()
    assert err.value.body["code"] == "invalid_api_key"
    for path in ("/v1/models", "/metrics"):
        assert _error(httpx.get(server.url + path), 401)["code"] == "invalid_api_key"
    assert _error(_post(server, {"model": "tiny", "messages": MESSAGES}, headers={"Authorization": "Basic x"}),
                  401)["code"] == "invalid_api_key"
    assert httpx.get(server.url + "/health").json()["status"] == "ok"


def test_limits_give_clear_4xx(server):
    over = _post(server, {"model": "tiny", "messages": MESSAGES, "max_tokens": 401})
    assert "limit of 400" in _error(over, 400)["message"]
    assert _error(_post(server, {"model": "tiny", "messages": MESSAGES, "n": 5}), 400)["param"] == "n"
    long_prompt = [{"role": "user", "content": "lava " * 3000}]
    err = _error(_post(server, {"model": "tiny", "messages": long_prompt, "max_tokens": 4}), 400)
    assert err["code"] == "context_length_exceeded" and "1500" in err["message"]
    big_prediction = {"type": "content", "content": "x" * 30_000}
    err = _error(_post(server, {"model": "tiny", "messages": MESSAGES, "prediction": big_prediction}), 413)
    assert err["param"] == "prediction"
    body = json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "y" * 300_000}]})
    err = _error(httpx.post(server.url + "/v1/chat/completions", content=body, headers=AUTH, timeout=30), 413)
    assert err["code"] == "request_too_large"

    def chunked():  # no Content-Length: the limit holds while reading
        yield body.encode()

    err = _error(httpx.post(server.url + "/v1/chat/completions", content=chunked(), headers=AUTH, timeout=30), 413)
    assert err["code"] == "request_too_large"


def _metric(server, name: str) -> float:
    text = httpx.get(server.url + "/metrics", headers=AUTH).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")
               or line.startswith(name + "{"))


def test_a_client_leaving_mid_stream_cancels_its_generation(server, client):
    cancelled = _metric(server, "llma_generations_cancelled")
    generated = _metric(server, "llma_completion_tokens_total")
    body = {"model": "tiny", "messages": MESSAGES, "max_tokens": 400, "stream": True}
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, headers=AUTH, timeout=60) as r:
        lines = r.iter_lines()
        got = [next(lines) for _ in range(6)]
        assert any('"content"' in line for line in got)
    left = time.monotonic()
    while _metric(server, "llma_generations_cancelled") <= cancelled:
        assert time.monotonic() - left < 10, "the generation was not cancelled"
        time.sleep(0.1)
    while httpx.get(server.url + "/health").json()["running"]:
        assert time.monotonic() - left < 10, "the engine did not stop"
        time.sleep(0.1)
    # The cancelled generation never finished: no tokens of it were counted; the next request runs.
    assert _metric(server, "llma_completion_tokens_total") == generated
    reply = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=3)
    assert reply.usage.completion_tokens == 3


def test_metrics_report_tokens_acceptance_and_queue(server, client):
    client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=5)
    text = httpx.get(server.url + "/metrics", headers=AUTH).text
    for name in ("llma_requests_total", "llma_completion_tokens_total", "llma_forward_passes_total",
                 "llma_accepted_tokens_total", "llma_proposed_tokens_total", "llma_queue_length",
                 "llma_batch_size", "llma_tokens_per_forward_bucket", "llma_prediction_accepted_tokens_total"):
        assert name in text
    assert _metric(server, "llma_completion_tokens_total") >= 5
    assert 'llma_requests_total{endpoint="/v1/chat/completions",status="200"}' in text


def test_a_client_leaving_a_plain_request_cancels_it_too(server):
    import socket

    cancelled = _metric(server, "llma_generations_cancelled")
    body = json.dumps({"model": "tiny", "messages": MESSAGES, "max_tokens": 400}).encode()
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {API_KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(head + body)
        started = time.monotonic()
        while not httpx.get(server.url + "/health").json()["running"]:  # the generation is under way
            assert time.monotonic() - started < 30
            time.sleep(0.05)
    left = time.monotonic()  # the socket is closed: the client is gone
    while _metric(server, "llma_generations_cancelled") <= cancelled or \
            httpx.get(server.url + "/health").json()["running"]:
        assert time.monotonic() - left < 10, "the generation went on after its client left"
        time.sleep(0.1)


def test_a_full_queue_answers_429(tiny_pipeline):
    from concurrent.futures import ThreadPoolExecutor

    from serve_fixtures import LiveServer

    from rag.serve import Limits, build_app

    with LiveServer(build_app(tiny_pipeline, None, Limits(max_queue=1, max_running=1), model="tiny")) as live:
        body = {"model": "tiny", "messages": MESSAGES, "max_tokens": 60}
        with ThreadPoolExecutor(4) as pool:
            replies = list(pool.map(lambda _: httpx.post(live.url + "/v1/chat/completions", json=body, timeout=120),
                                    range(4)))
    statuses = sorted(r.status_code for r in replies)
    assert 200 in statuses and 429 in statuses, statuses
    assert next(_error(r, 429) for r in replies if r.status_code == 429)["type"] == "rate_limit_error"
