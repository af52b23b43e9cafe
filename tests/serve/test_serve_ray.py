"""Ray Serve on CPU, 2 replicas of the tiny-model server over one index: concurrent requests spread
over both; killing one replica's process under load ends its requests in flight with an error (no
hang) while the other's succeed, and Ray starts a replacement that serves."""
from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

ray = pytest.importorskip("ray")
from ray import serve  # noqa: E402

from serve_fixtures import free_port  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
BODY = {"model": "tiny", "messages": [{"role": "user", "content": "Tell me about lava."}]}


@pytest.fixture(scope="module")
def ray_url(tiny_model_dir, serve_index_dir):
    from rag.serve.ray_app import build

    env = {"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    ray.init(num_cpus=4, include_dashboard=False, runtime_env={"env_vars": env}, log_to_driver=False)
    port = free_port()
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build({"model": str(tiny_model_dir), "index": str(serve_index_dir), "model_name": "tiny",
                         "replicas": 2, "num_cpus": 1, "device": "cpu"}), name="llma", route_prefix="/")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


def _running(app: str = "llma") -> int:
    states = serve.status().applications[app].deployments["LLMAServer"].replica_states
    return int(states.get("RUNNING", 0))


def _stream(url: str, out: dict, max_tokens: int) -> None:
    """One streaming request; records its replica, whether it finished ([DONE]) or how it failed."""
    out["instance"] = None
    try:
        with httpx.stream("POST", url + "/v1/chat/completions", json={**BODY, "max_tokens": max_tokens,
                          "stream": True}, timeout=httpx.Timeout(60, connect=10)) as r:
            out["instance"] = r.headers.get("x-llma-instance")
            out["status"] = r.status_code
            lines = [line for line in r.iter_lines() if line]
        out["done"] = bool(lines) and lines[-1] == "data: [DONE]"
        out["error"] = None if out["done"] else f"status {r.status_code}, stream ended after {len(lines)} events"
    except httpx.HTTPError as err:
        out["done"], out["error"] = False, f"{type(err).__name__}: {err}"


@pytest.mark.slow
def test_two_replicas_share_the_load_and_survive_a_killed_one(ray_url):
    assert _running() == 2
    # Concurrent requests spread over both replicas (each serialises its own generations).
    results: list[dict] = [{} for _ in range(8)]
    threads = [threading.Thread(target=_stream, args=(ray_url, r, 8)) for r in results]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert all(r["done"] for r in results), results
    instances = {r["instance"] for r in results}
    assert len(instances) == 2, instances

    # Under load, kill one replica's process: its requests in flight fail cleanly, the others finish.
    results = [{} for _ in range(6)]
    threads = [threading.Thread(target=_stream, args=(ray_url, r, 200)) for r in results]
    started = time.monotonic()
    for t in threads:
        t.start()
    while not any(r.get("instance") for r in results):
        assert time.monotonic() - started < 60
        time.sleep(0.05)
    time.sleep(0.5)
    victim = next(r["instance"] for r in results if r.get("instance"))
    os.kill(int(victim.rsplit(":", 1)[1]), signal.SIGKILL)
    for t in threads:
        t.join(90)
    assert not any(t.is_alive() for t in threads), "a request hung after its replica was killed"
    on_victim = [r for r in results if r["instance"] == victim]
    others = [r for r in results if r["instance"] not in (victim, None)]
    assert on_victim and all(not r["done"] for r in on_victim), results
    assert others and all(r["done"] for r in others), results

    # Ray replaces the replica; the new one serves.
    deadline = time.monotonic() + 120
    seen: set[str] = set()
    while True:
        if _running() == 2:
            replies = [httpx.post(ray_url + "/v1/chat/completions", json={**BODY, "max_tokens": 3}, timeout=30)
                       for _ in range(6)]
            assert all(r.status_code == 200 for r in replies), [r.text for r in replies]
            seen |= {r.headers["x-llma-instance"] for r in replies}
            if seen - instances:
                break
        assert time.monotonic() < deadline, "Ray did not replace the killed replica"
        time.sleep(1)
    assert victim not in seen
