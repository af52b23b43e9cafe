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
