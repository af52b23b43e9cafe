"""`python -m rag.serve` as other tools start it: a subprocess on 127.0.0.1, the key from the
environment; with the tiny model and an index, and with the real bundled SmolLM2 (slow)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

openai = pytest.importorskip("openai")

from serve_fixtures import free_port  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _start(*args: str, key: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "LLMA_API_KEY": key, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "rag.serve", "--port", str(port), *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"the server exited: {proc.stdout.read() if proc.stdout else ''}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the server did not come up"
        time.sleep(0.3)


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.mark.slow
def test_cli_serves_a_model_folder_and_an_index(tiny_model_dir, serve_index_dir):
    proc, url = _start("--model", str(tiny_model_dir), "--model-name", "tiny", "--index", str(serve_index_dir),
                       "--max-tokens", "64", key="env-key")
    try:
        client = openai.OpenAI(base_url=url + "/v1", api_key="env-key", max_retries=0)
        assert [m.id for m in client.models.list()] == ["tiny", "llma-rag"]
        reply = client.chat.completions.create(model="llma-rag", messages=[{"role": "user", "content": "Lava?"}],
                                               max_tokens=5)
        assert reply.usage.completion_tokens == 5 and reply.model_extra["llma"]["sources"]
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}], max_tokens=65)
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url + "/v1", api_key="other", max_retries=0).models.list()
    finally:
        _stop(proc)


@pytest.mark.slow  # ~15 s: the imports alone
def test_cli_refuses_a_missing_model_folder(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "rag.serve", "--model", str(tmp_path / "none"), "--port", "1"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "error:" in done.stderr and "does not exist" in done.stderr


@pytest.mark.slow
def test_real_model_prediction_is_accepted_and_lossless():
    """SmolLM2-135M (bundled), asked to repeat a sentence: the prediction is copied, output unchanged."""
    proc, url = _start("--device", "cpu", "--dtype", "float32", key="k")
    try:
        client = openai.OpenAI(base_url=url + "/v1", api_key="k", max_retries=0, timeout=300)
        sentence = ("The with statement is used to wrap the execution of a block with methods defined by a "
                    "context manager.")
        messages = [{"role": "user", "content": f"Repeat this sentence exactly: {sentence}"}]
        model = client.models.list().data[0].id
        plain = client.chat.completions.create(model=model, messages=messages, max_tokens=40, temperature=0)
        predicted = client.chat.completions.create(model=model, messages=messages, max_tokens=40, temperature=0,
                                                   prediction={"type": "content", "content": sentence})
        assert predicted.choices[0].message.content == plain.choices[0].message.content
        assert predicted.usage.completion_tokens_details.accepted_prediction_tokens > 10
        assert predicted.usage.completion_tokens == plain.usage.completion_tokens
    finally:
        _stop(proc)
