"""rag.remote.RemotePipeline (the app's `--server`) against a live server: the same answers as the
server's own llma-rag, streamed as the pipeline streams; the app's remote service."""
from __future__ import annotations

from dataclasses import replace

import pytest

openai = pytest.importorskip("openai")

from serve_fixtures import API_KEY, free_port  # noqa: E402

from llma import LLMAConfig  # noqa: E402
from rag.remote import RemoteError, RemotePipeline  # noqa: E402
from rag.types import RagSettings  # noqa: E402

QUESTION = "What is a volcano?"
SETTINGS = RagSettings(llma=LLMAConfig(max_new_tokens=20), use_answer_cache=False)


@pytest.fixture(scope="module")
def remote(server):
    return RemotePipeline(server.url, API_KEY)


def test_stream_matches_the_local_pipeline(remote, tiny_pipeline):
    deltas = list(remote.stream(QUESTION, settings=SETTINGS))
    local = tiny_pipeline.answer(QUESTION, settings=SETTINGS)
    assert deltas[0].passages and deltas[0].passages == local.passages
    assert all(d.passages is None for d in deltas[1:])
    answer = deltas[-1].answer
    assert deltas[-1].done and answer is not None and sum(not d.done for d in deltas) == len(deltas) - 1
    assert "".join(d.text for d in deltas) == answer.text == local.text
    assert answer.tokens == local.tokens and answer.spans == local.spans
    assert answer.stats["tokens"] == 20 and answer.stop_reason == local.stop_reason
    assert remote.draft_defaults == tiny_pipeline.draft_defaults


def test_settings_reach_the_server(remote, tiny_pipeline):
    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello, ask away."}]
    settings = replace(SETTINGS, top_k=1, llma=replace(SETTINGS.llma, enabled=False), use_history_refs=False)
    answer = remote.answer(QUESTION, history, settings)
    local = tiny_pipeline.answer(QUESTION, history, settings)
    assert answer.text == local.text and len(answer.passages) == 1 and answer.stats["proposed_tokens"] == 0
    comparison = remote.compare_with_greedy(QUESTION, settings=SETTINGS, repeats=1)
    assert comparison.identical and comparison.speedup > 0


def test_bad_input_and_unreachable_server(remote):
    with pytest.raises(ValueError, match="limit of 400"):
        remote.answer(QUESTION, settings=replace(SETTINGS, llma=LLMAConfig(max_new_tokens=999)))
    with pytest.raises(ValueError, match="empty"):
        remote.stream("  ")
    with pytest.raises(RemoteError):
        RemotePipeline(f"http://127.0.0.1:{free_port()}", API_KEY, timeout=5)
    with pytest.raises(RemoteError):
        RemotePipeline(remote.url, "wrong-key")


def test_the_app_answers_through_a_remote_server(server, tmp_path):
    import app
    from ui import startup

    args = app.parse_args(["--server", server.url, "--api-key", API_KEY, "--docs", str(tmp_path),
                           "--index", str(tmp_path / "idx")])
    service = startup.remote_service(args)
    service.start(background=False)
    assert service.ready.is_set() and server.url in service.status
    assert service.pipe.answer(QUESTION, settings=SETTINGS).text
    with pytest.raises(RuntimeError, match="indexed on the server"):
        service.reindex()
