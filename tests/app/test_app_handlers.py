"""The app's wiring, in process and model-free: the real UI with a fake pipeline, through
gradio_client. Covers streaming, multi-turn history, bad input, errors, queueing, uploads, flags."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from gradio_client import Client, handle_file

import app
from app_fakes import FakePipeline, free_port
from ui.service import Service

SETTINGS = dict(top_k=2, min_n=2, max_n=4, k=8, adaptive=True, max_new_tokens=32,
                temperature=0.0, use_llma=True, use_history=True)


class Report(SimpleNamespace):
    def summary(self) -> str:
        return f"{self.n} chunks"


class Harness:
    def __init__(self, tmp_path, ready=True):
        self.pipe = FakePipeline(delay=0.01)
        self.builds = 0

        def builder(docs, index):
            self.builds += 1
            return Report(n=self.builds, skipped=[])

        self.service = Service(tmp_path / "docs", tmp_path / "index", builder=builder,
                               loader=lambda *a: self.pipe, reloader=self.reload)
        self.reloads = 0
        if ready:
            self.service.start(background=False)
        self.demo = app.build_ui(self.service, examples=["What is a test?"])
        self.demo.queue(default_concurrency_limit=1)
        self.port = free_port()
        self.demo.launch(server_name="127.0.0.1", server_port=self.port, prevent_thread_lock=True,
                         quiet=True, **app.page_assets())

    def reload(self, pipe, index_dir):
        self.reloads += 1

    def client(self) -> Client:
        return Client(f"http://127.0.0.1:{self.port}/", verbose=False, download_files=False)

    def close(self):
        self.demo.close()


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    h = Harness(tmp_path_factory.mktemp("handlers"))
    yield h
    h.close()


def ask(client, question, **overrides):
    job = client.submit(question, **dict(SETTINGS, **overrides), api_name="/ask")
    job.result(timeout=60)
    return job.outputs()


def bot_html(outputs) -> str:
    return outputs[-1][0][-1]["content"][0]["text"]


def test_answer_streams_and_is_highlighted(harness):
    outputs = ask(harness.client(), "Do dicts keep order?")
    chats = [o[0] for o in outputs if isinstance(o[0], list)]
    assert len(chats) >= 5  # one update per delta
    final = bot_html(outputs)
    assert '<mark class="llma-src llma-src-passage" title="copied from [1] Mapping types">' in final
    assert '<mark class="llma-src llma-src-output" title="copied from this answer, earlier words">' in final
    assert "15 tokens · 4 forward passes" in final
    sources, stats_html, plot = outputs[-1][2], outputs[-1][3], outputs[-1][4]
    assert "Mapping types" in sources and "&lt;script&gt;x&lt;/script&gt;" in sources
    assert "Tokens per forward" in stats_html and "11 of 15 (73%)" in stats_html
    assert plot["x_lim"] == [0, 10] and plot["y_lim"] == [0, 6]  # from 0, whole-number ticks
    assert [row[:2] for row in plot["value"]["data"]] == [[2, 6], [3, 2], [4, 3]]
    assert [row[2] for row in plot["value"]["data"]] == ["passage", "passage", "this answer"]


def test_the_first_update_is_a_spinner(harness):
    outputs = ask(harness.client(), "Spinner?")
    first = outputs[0][0][-1]["content"][0]["text"]
    assert 'class="llma-spinner"' in first and "llma-answer" in first
    assert "llma-spinner" not in bot_html(outputs)


def test_a_failing_message_never_shows_absolute_paths(harness, tmp_path):
    harness.pipe.fail = True
    harness.pipe.fail_message = f"cannot read {harness.service.docs_dir.resolve()}/x.md"
    try:
        outputs = ask(harness.client(), "Paths?")
    finally:
        harness.pipe.fail, harness.pipe.fail_message = False, "model exploded"
    text = bot_html(outputs)
    assert "cannot read docs/x.md" in text and str(harness.service.docs_dir) not in text


def test_history_is_passed_on_the_next_turn(harness):
    client = harness.client()
    ask(client, "First question?")
    ask(client, "Second <b>question</b>?", use_history=False)
    question, history, settings = harness.pipe.calls[-1]
    assert question == "Second <b>question</b>?"
    assert history[0] == {"role": "user", "content": "First question?"}
    assert history[1]["role"] == "assistant" and "Dictionaries preserve" in history[1]["content"]
    assert settings.top_k == 2 and settings.llma.max_new_tokens == 32
    assert settings.use_history_refs is False


def test_the_page_and_the_library_accept_the_same_questions():
    from rag.inputs import MAX_QUESTION_CHARS, check_question
    from ui.chat import check_question as check_on_page

    longest = "why " * (MAX_QUESTION_CHARS // 4 - 1) + "why?"
    assert len(longest) == MAX_QUESTION_CHARS
    assert check_on_page(longest) == (longest, None) and check_question(longest) == longest
    question, problem = check_on_page(longest + "!")
    assert question == "" and f"the limit is {MAX_QUESTION_CHARS:,}" in problem
    with pytest.raises(ValueError):
        check_question(longest + "!")


@pytest.mark.parametrize("message", ["", "  \n\t ", "x" * 100_000, "\x00\x01\x1b[31m\x7f"])
def test_empty_and_huge_messages_never_reach_the_model(harness, message):
    calls = len(harness.pipe.calls)
    ask(harness.client(), message)
    assert len(harness.pipe.calls) == calls


def test_bad_settings_are_a_warning(harness):
    calls = len(harness.pipe.calls)
    ask(harness.client(), "q?", min_n=5, max_n=2)
    assert len(harness.pipe.calls) == calls
    with pytest.raises(Exception, match="less than minimum"):  # Gradio checks slider ranges itself
        ask(harness.client(), "q?", temperature=-1)
    assert len(harness.pipe.calls) == calls


def test_generation_error_is_shown_in_the_chat(harness):
    harness.pipe.fail = True
    try:
        outputs = ask(harness.client(), "Explode?")
    finally:
        harness.pipe.fail = False
    assert "Error: model exploded" in bot_html(outputs)
    assert ask(harness.client(), "Still alive?")  # and the app keeps answering


def test_compare_with_greedy(harness):
    client = harness.client()
    client.predict(**SETTINGS, api_name="/compare")  # nothing asked yet: a warning, no error
    ask(client, "Compare me")
    out = client.predict(**SETTINGS, api_name="/compare")
    assert "Speedup: 1.92× (median of 3 alternating runs, 1.50–2.25×)" in out
    assert "identical outputs" in out


def test_each_client_session_gets_its_own_cache_key(harness):
    """The pipeline's answer cache is keyed by Gradio's session: the same key for every turn of a
    session, a different one for another session."""
    first = harness.client()
    second = harness.client()
    ask(first, "Mine?")
    ask(first, "Mine again?")
    ask(second, "Theirs?")
    sessions = harness.pipe.sessions[-3:]
    assert all(isinstance(s, str) and s for s in sessions)
    assert sessions[0] == sessions[1] != sessions[2]


def test_one_generation_at_a_time(harness):
    harness.pipe.delay = 0.05
    clients = [harness.client() for _ in range(3)]
    jobs = [c.submit("parallel?", **SETTINGS, api_name="/ask") for c in clients]
    for job in jobs:
        job.result(timeout=60)
    harness.pipe.delay = 0.01
    assert harness.pipe.max_active == 1


def test_not_ready_is_a_warning(tmp_path):
    h = Harness(tmp_path, ready=False)
    try:
        ask(h.client(), "too early?")
        assert h.pipe.calls == []
        status, _, *updates = h.client().predict(api_name="/status")
        assert "Starting" in status
        # Before the model is ready the settings keep the sliders' own values (no value is sent).
        assert len(updates) == 3 and all(u.get("__type__") == "update" and "value" not in u for u in updates)
    finally:
        h.close()


def test_settings_take_the_loaded_backends_drafting_defaults(harness):
    """Once the model is ready, min n-gram, copy length and adaptive show its backend's defaults, in
    the same update as the status "Ready." (a user's change after it is never overwritten)."""
    status, _, *drafting = harness.client().predict(api_name="/status")
    assert "Ready." in status and drafting == [1, 31, False]


def test_flags_and_env(monkeypatch):
    monkeypatch.setenv("LLMA_PORT", "9999")
    monkeypatch.setenv("LLMA_MODEL", "some/model")
    monkeypatch.setenv("LLMA_DEVICE", "cpu")
    args = app.parse_args([])
    assert (args.host, args.port, args.model, args.device) == ("127.0.0.1", 9999, "some/model", "cpu")
    assert args.index.endswith("indexes/demo") and args.docs.endswith("data/docs")
    args = app.parse_args(["--port", "1234", "--index", "/x", "--docs", "/d", "--dtype", "bf16",
                           "--host", "0.0.0.0"])
    assert (args.port, args.index, args.docs, args.dtype, args.host) == (1234, "/x", "/d", "bf16",
                                                                         "0.0.0.0")


def test_startup_failure_is_reported(tmp_path):
    def broken(docs, index):
        raise FileNotFoundError("no such folder")

    svc = Service(tmp_path / "d", tmp_path / "i", builder=broken)
    svc.start(background=False)
    assert not svc.ready.is_set() and "no such folder" in svc.status


def test_statuses_show_no_absolute_paths(tmp_path):
    """Issue #24: the page shows folder names, never this machine's paths."""
    seen = []

    def builder(docs, index):
        seen.append(svc.status)
        raise FileNotFoundError(f"no such folder: {(tmp_path / 'docs').resolve()}/a.md in {Path.home()}/x")

    svc = Service(tmp_path / "docs", tmp_path / "index", builder=builder)
    svc.start(background=False)
    for status in seen + [svc.status, svc.error]:
        assert str(tmp_path) not in status and str(Path.home()) + "/" not in status, status
    assert "docs/ → index/" in seen[0]
    assert "no such folder: docs/a.md in ~/x" in svc.status


def test_examples_file_is_read():
    examples = app.load_examples()
    assert examples and all(isinstance(q, str) and q.endswith("?") for q in examples)
    assert app.load_examples(app.ROOT / "missing.json") == []

