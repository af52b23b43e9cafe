"""Short load test: 3 simultaneous users for 30 s against the session's live app, through
reliability/load.py (the long one: `python -m reliability.load --users 20 --minutes 5`)."""
from __future__ import annotations

import pytest

from reliability.load import load_questions, run_load

USERS, SECONDS = 3, 30


@pytest.mark.slow
def test_three_concurrent_users_all_answered_completely(live_app):
    report = run_load(live_app.url, live_app.proc.pid, USERS, SECONDS, load_questions(),
                      max_new_tokens=24, timeout_s=240, sample_s=1.0)
    detail = report["requests_detail"]
    assert report["failed"] == 0, report["errors"]
    assert report["incomplete"] == 0, [r for r in detail if not r["complete"]]
    assert report["answers_per_user"]["min"] >= 1, detail
    assert {r["user"] for r in detail} == set(range(USERS))
    # Every request started before the deadline; in-flight ones finished and were counted.
    assert all(r["start"] < SECONDS for r in detail) and report["complete"] == len(detail)
    assert report["latency_s"]["p50"] > 0 and report["first_text_s"]["max"] <= report["latency_s"]["max"]
    rss = report["rss_mb"]
    assert rss["samples"] >= 5 and rss["start"] > 100 and rss["end"] > 100, rss


def test_a_final_output_gives_its_prompt_and_reused_tokens():
    """The report's prompt token counts come from the statistics table the app sends last."""
    from reliability.load import check_final
    from reliability.load_report import Request
    from ui.stats import stats_html

    chat = [{"role": "user", "content": "Why?"}, {"role": "assistant", "content": "<p>Because.</p>"}]
    for reused, expected in ((512, 512.0), (0, 0.0)):
        table = stats_html({"tokens": 5, "forward_passes": 3, "wall_s": 2.5, "prompt_tokens": 900,
                            "reused_prompt_tokens": reused})
        req = Request(0, "Why?", 0.0)
        check_final((chat, None, None, table), "Why?", req)
        assert req.complete and req.prompt_tokens == 900.0 and req.reused_tokens == expected
        assert req.server_s == 2.5
