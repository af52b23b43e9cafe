"""End to end through gradio_client against `python app.py` (real bundled model, tiny docs)."""
from __future__ import annotations

import html
import re

import pytest

# top_k, min_n, max_n, k, adaptive, max_new_tokens, temperature, use_llma, use_history
SETTINGS = dict(top_k=2, min_n=2, max_n=4, k=8, adaptive=True, max_new_tokens=40,
                temperature=0.0, use_llma=True, use_history=True)


def text_of(message: dict) -> str:
    content = message["content"]
    if isinstance(content, list):
        content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return html.unescape(re.sub(r"<[^>]+>", "", str(content)))


def ask(client, question: str, **overrides):
    """Submit a question; returns every streamed output tuple (the last one is final)."""
    job = client.submit(question, **dict(SETTINGS, **overrides), api_name="/ask")
    job.result(timeout=240)  # re-raises a server-side error
    return job.outputs()


def test_question_gets_a_streamed_answer_with_sources_and_stats(client):
    updates = ask(client, "Are leading zeros allowed in a decimal integer literal?")
    chats = [u[0] for u in updates if isinstance(u[0], list) and len(u[0]) >= 2]
    assert chats, updates
    final_chat = chats[-1]
    assert [m["role"] for m in final_chat[-2:]] == ["user", "assistant"]
    answer = text_of(final_chat[-1])
    assert answer.strip(), final_chat
    # Streamed: the assistant message grew over several updates.
    lengths = [len(text_of(c[-1])) for c in chats]
    assert len(set(lengths)) >= 3, lengths
    final = updates[-1]
    sources_html, stats_html = final[2], final[3]
    assert "integers.md" in sources_html and "score" in sources_html
    assert "Forward passes" in stats_html and "Tokens / s" in stats_html
    assert "forward passes" in text_of(final_chat[-1])  # per-answer footer


def test_follow_up_turn_and_compare_with_greedy(client):
    updates = ask(client, "And what does the power operator return for 10**-2?")
    final_chat = updates[-1][0]
    assert sum(m["role"] == "assistant" for m in final_chat) >= 2  # same session: a second turn
    out = client.predict(**SETTINGS, api_name="/compare")
    assert "Speedup:" in out and "identical outputs" in out, out


def test_empty_and_huge_messages_do_not_crash(client):
    for message in ["", "   \n ", "why " * 250_000, "<script>alert(1)</script>" * 4000]:  # 1 MB
        ask(client, message)  # answered with a warning; no exception
    # The app still answers afterwards.
    updates = ask(client, "Which scope does a nonlocal name refer to?", max_new_tokens=8)
    assert text_of(updates[-1][0][-1]).strip()


def test_bad_settings_are_reported_not_fatal(client):
    ask(client, "What does assert do?", min_n=5, max_n=2)  # ValueError inside LLMAConfig
    updates = ask(client, "What does assert do?", max_new_tokens=8)
    assert text_of(updates[-1][0][-1]).strip()


def test_unsupported_upload_gets_a_clear_message(client, live_app, tmp_path):
    from gradio_client import handle_file

    bad = tmp_path / "malware.exe"
    bad.write_bytes(b"MZ\x00\x00")
    message, *_ = client.predict([handle_file(str(bad))], api_name="/add_documents")
    assert "Not added: malware.exe: unsupported file type '.exe'" in message
    assert not (live_app.docs / "uploads" / "malware.exe").exists()


def test_bad_uploads_lose_nothing_already_indexed(client, live_app, tmp_path):
    """A PDF that is not one is saved but skipped by the indexer, with the reason; a 25 MB file is
    refused by the server before it is stored; the documents indexed before still answer."""
    from gradio_client import handle_file

    from index import load_index

    before = load_index(live_app.index).sources
    fake = tmp_path / "report.pdf"
    fake.write_bytes(b"this is not a PDF at all")
    message, *_ = client.predict([handle_file(str(fake))], api_name="/add_documents")
    assert "Not added: report.pdf: invalid PDF" in message, message
    huge = tmp_path / "huge.txt"
    with huge.open("wb") as fh:
        fh.truncate(25 * 2**20)
    with pytest.raises(Exception, match="(?i)too large|exceeds|maximum"):
        client.predict([handle_file(str(huge))], api_name="/add_documents")
    assert not (live_app.docs / "uploads" / "huge.txt").exists()
    assert load_index(live_app.index).sources == before
    updates = ask(client, "Are leading zeros allowed in a decimal integer literal?", max_new_tokens=8)
    assert text_of(updates[-1][0][-1]).strip()
