"""SIGKILL during `python -m index build`: the short version of `python -m reliability.crash`.

Three builds A -> B are killed (two at uniform moments, one in the save/commit
window); after each, a fresh process must load exactly A or B (or get a clean
IndexingError), and an uninterrupted rebuild must give B with no stale files.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from reliability import crash

DOCS = Path(__file__).resolve().parents[2] / "data" / "docs"


@pytest.mark.slow
def test_sigkilled_builds_leave_a_or_b_and_recover(tmp_path):
    report = crash.run_campaign(DOCS, tmp_path, runs=3, seed=7, files=5, save_every=2,
                                max_bytes=4000)  # small files: a short test

    runs = report["runs"]
    assert report["summary"]["killed"] == 3, runs  # builds that finished first do not count
    for run in runs:
        assert run["outcome"] in {"A", "B", "error"}, run
        assert run["recovery_ok"], run
    # The save-window kill must really have hit a running build, after its first new file.
    saves = [run for run in runs if run["mode"] == "save" and run["killed"]]
    assert saves and all(run["phase"] != "before save" for run in saves), runs
    assert report["summary"]["failures"] == 0
