"""The figures of reliability/load.py: one record per question, the server's memory sampled while
the load runs, and the summary of both as a dict (the JSON report) and as markdown."""
from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import psutil

from reliability.report import rss_mb

# The load test's logger: a sampler's warning reads as the load test's own in its log.
log = logging.getLogger("llma-rag.load")


@dataclass
class Request:
    """One question. Seconds; `start`/`end` from the start of the load, the rest from submit."""

    user: int
    question: str
    start: float
    end: float = 0.0
    latency_s: float = 0.0  # to the final output, including the wait in the app's queue
    first_text_s: float | None = None  # to the first streamed answer text
    ok: bool = False  # no exception, no time-out
    complete: bool = False  # the final output has the answer and its stats: generation finished
    error: str | None = None
    answer_chars: int = 0
    server_s: float | None = None  # the app's own "Total time": latency minus this is queueing
    prompt_tokens: float | None = None
    reused_tokens: float = 0.0  # of them, restored from an earlier prompt's stored chunks


# -- memory ----------------------------------------------------------------------------------
def tree_rss_mb(pid: int) -> float:
    """RSS of the server and its children (workers the app or a library may start)."""
    total = rss_mb(pid)
    for child in psutil.Process(pid).children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += rss_mb(child.pid)
    return total


def rss_sampler(pid: int, t0: float, every_s: float, stop: threading.Event,
                samples: list[tuple[float, float]]) -> threading.Thread:
    """A started thread that appends (seconds since t0, MiB) now, every `every_s`, and once more
    after `stop` is set (the end figure: after every request has finished)."""
    def loop() -> None:
        last = False
        while True:
            try:
                samples.append((round(time.monotonic() - t0, 1), round(tree_rss_mb(pid), 1)))
            except psutil.NoSuchProcess:
                log.warning("server %d is gone; no RSS sample", pid)
            if last:
                return
            last = stop.wait(every_s)

    thread = threading.Thread(target=loop, name="rss-sampler", daemon=True)
    thread.start()
    return thread


def slope_mb_per_min(samples: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares RSS slope over the second half of the run: growth once warmed up."""
    late = [s for s in samples if s[0] >= samples[-1][0] / 2] if samples else []
    if len(late) < 3:
        return None
    t, mb = np.array(late).T
    return round(float(np.polyfit(t / 60, mb, 1)[0]), 2)


# -- the summary -----------------------------------------------------------------------------
def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    """p50/p90/p99 (numpy's linear interpolation), max and mean, rounded; all None if empty."""
    if not values:
        return dict.fromkeys(["p50", "p90", "p99", "max", "mean"])
    p50, p90, p99 = (round(float(v), 2) for v in np.percentile(values, [50, 90, 99]))
    return {"p50": p50, "p90": p90, "p99": p99, "max": round(max(values), 2),
            "mean": round(float(np.mean(values)), 2)}


def summarize(results: list[Request], samples: list[tuple[float, float]], users: int,
              seconds: float, wall_s: float) -> dict[str, Any]:
    done = [r for r in results if r.ok]
    complete = [r for r in done if r.complete]
    per_user = [sum(r.user == u for r in complete) for u in range(users)]
    mbs = [mb for _, mb in samples]
    return {
        "users": users, "duration_s": seconds, "wall_s": round(wall_s, 1),
        "requests": len(results), "failed": len(results) - len(done),
        "incomplete": len(done) - len(complete), "complete": len(complete),
        "answers_per_min": round(len(complete) / (wall_s / 60), 2),
        "answers_per_user": {"min": min(per_user, default=0), "max": max(per_user, default=0)},
        "latency_s": percentiles([r.latency_s for r in done]),
        "first_text_s": percentiles([r.first_text_s for r in done if r.first_text_s is not None]),
        "server_s": percentiles([r.server_s for r in complete if r.server_s is not None]),
        "prompt_tokens": sum(r.prompt_tokens or 0 for r in complete),
        "reused_prompt_tokens": sum(r.reused_tokens for r in complete),
        "rss_mb": {"start": mbs[0] if mbs else None, "end": mbs[-1] if mbs else None,
                   "max": max(mbs, default=None), "samples": len(mbs),
                   "slope_second_half_mb_per_min": slope_mb_per_min(samples)},
        "errors": sorted({r.error for r in results if r.error})[:20],
    }


def _pct(p: dict[str, Any]) -> str:
    return f"{p['p50']} / {p['p90']} / {p['p99']} / {p['max']} s"


def to_markdown(r: dict[str, Any]) -> str:
    rss = r["rss_mb"]
    rows = [("Users (own session each)", r["users"]),
            ("Questions started for / wall time incl. drain", f"{r['duration_s']:.0f} s / {r['wall_s']:.0f} s"),
            ("Requests / failed / incomplete", f"{r['requests']} / {r['failed']} / {r['incomplete']}"),
            ("Complete answers per minute", r["answers_per_min"]),
            ("Answers per user (min–max)", "{min}–{max}".format(**r["answers_per_user"])),
            ("Latency p50 / p90 / p99 / max", _pct(r["latency_s"])),
            ("First answer text p50 / p90 / p99 / max", _pct(r["first_text_s"])),
            ("Generation alone (app's Total time) p50 / p90 / p99 / max", _pct(r["server_s"])),
            ("Prompt tokens, of them restored from stored chunks",
             f"{r.get('prompt_tokens', 0):.0f}, {r.get('reused_prompt_tokens', 0):.0f}"),
            ("Server RSS start / end / max", f"{rss['start']} / {rss['end']} / {rss['max']} MiB"),
            ("RSS slope, second half", f"{rss['slope_second_half_mb_per_min']} MiB/min ({rss['samples']} samples)"),
            ("Load average 1/5/15 min, start → end", f"{r['loadavg_start']} → {r['loadavg_end']}"),
            ("Max new tokens", r["max_new_tokens"])]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    errors = "\n".join(f"- `{e}`" for e in r["errors"]) or "none"
    return (f"# Load test: {r['users']} concurrent users\n\n```\n{r['command']}\n```\n\n"
            f"{r['date']} · {r['machine']} · Python {r['python']} · commit {r['git_commit']}\n\n"
            f"| Figure | Value |\n|---|---|\n{table}\n\n"
            "Latency and first-text times are from submit, so they include the wait in the app's "
            "queue (as many answers at a time as the engine decodes together). The CPU was shared "
            f"with other jobs: see the load averages.\n\nErrors: {errors}\n")
