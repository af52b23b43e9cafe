"""llma.threads.in_own_thread: torch set-up work in a thread that has ended when it returns."""
from __future__ import annotations

import threading

import pytest

from llma.threads import in_own_thread


def test_runs_in_a_thread_that_ends_and_returns_its_result():
    seen = []

    def work(a, b=0):
        seen.append(threading.current_thread())
        return a + b

    assert in_own_thread(work, 2, b=3) == 5
    assert seen[0] is not threading.current_thread() and not seen[0].is_alive()


def test_its_exceptions_are_raised_in_the_caller():
    def fail():
        raise ValueError("bad model")

    with pytest.raises(ValueError, match="bad model"):
        in_own_thread(fail)
