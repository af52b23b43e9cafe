"""Concurrent users against the web app, loopback only: each simulated user has its own
gradio_client session and asks real questions (data/questions.json) until the time is up; the
report gives failures, complete answers, latency percentiles and the server's memory over time.

    python -m reliability.load --users 20 --minutes 5 --json benchmarks/results/reliability/load.json

Without --url it starts its own `app.py` on a free 127.0.0.1 port, on a temporary copy of
indexes/demo (the repository's index is never written), and always stops it again.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import html
import json
import logging
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from reliability.load_report import Request, rss_sampler, summarize, to_markdown
from reliability.report import REPORT_DIR, ROOT, header, write_report

log = logging.getLogger("llma-rag.load")
READY = "llma-rag.app: Ready."
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
# The /ask inputs after the message (max_new_tokens is passed separately): the UI's defaults.
SETTINGS = dict(top_k=4, min_n=2, max_n=4, k=8, adaptive=True, temperature=0.0, use_llma=True,
                use_history=True)
POLL_S = 0.2  # how often a user looks at its job: coarse enough not to steal the server's CPU


# -- the app ---------------------------------------------------------------------------------
def load_questions(path: Path = ROOT / "data" / "questions.json") -> list[str]:
    return [q["question"] for q in json.loads(path.read_text(encoding="utf-8"))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """Linux: the app gets SIGTERM even if this script is SIGKILLed (no finally runs then)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _wait_ready(proc: subprocess.Popen, log_path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while READY not in (text := log_path.read_text(errors="replace")):
        if "Start-up failed" in text or proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"app did not start (rc={proc.poll()}); log:\n{text[-3000:]}")
        time.sleep(0.5)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            log.warning("app %d ignored SIGTERM; killing it", proc.pid)
            proc.kill()
            proc.wait()
    log.info("app %d stopped (rc=%s)", proc.pid, proc.returncode)


@contextlib.contextmanager
def app_server(docs: Path, index: Path | None, max_new_tokens: int,
               start_timeout_s: float = 900) -> Iterator[tuple[str, int]]:
    """(url, pid) of a fresh `app.py` on 127.0.0.1; it is stopped however the block ends."""
    with tempfile.TemporaryDirectory(prefix="llma-load-") as tmp:
        if index is None:  # a copy: start-up is an incremental update, not a full build
            index = Path(tmp) / "index"
            if (ROOT / "indexes" / "demo").is_dir():
                shutil.copytree(ROOT / "indexes" / "demo", index)
        port, log_path = free_port(), Path(tmp) / "app.log"
        cmd = [sys.executable, str(ROOT / "app.py"), "--host", "127.0.0.1", "--port", str(port),
               "--docs", str(docs), "--index", str(index), "--device", "cpu",
               "--max-new-tokens", str(max_new_tokens)]
        env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1",
                   GRADIO_ANALYTICS_ENABLED="False", TOKENIZERS_PARALLELISM="false")
        with open(log_path, "wb") as out:
            # Own session: Ctrl-C reaches only this script, whose finally then stops the app.
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                    start_new_session=True, preexec_fn=_die_with_parent)
        log.info("app %d starting on port %d (log %s)", proc.pid, port, log_path)
        try:
            _wait_ready(proc, log_path, start_timeout_s)
            yield f"http://127.0.0.1:{port}/", proc.pid
        finally:
            _stop(proc)
            _show_errors(log_path)


def _show_errors(log_path: Path) -> None:
    """Server-side errors, before the temporary log goes: a failed answer's cause is there."""
    lines = log_path.read_text(errors="replace").splitlines()
    errors = [line for line in lines if " ERROR " in line or line.startswith("Traceback")]
    for line in errors[:20]:
        log.warning("app log: %s", line)
    log.info("app log: %d lines, %d error lines", len(lines), len(errors))


# -- one user --------------------------------------------------------------------------------
def text_of(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return html.unescape(re.sub(r"<[^>]+>", "", str(content or "")))


def answer_text(output: Any) -> str:
    """The assistant text of one /ask output ("" before it starts, or on a skip update)."""
    chat = output[0] if isinstance(output, (tuple, list)) and output else None
    if not isinstance(chat, list) or not chat or chat[-1].get("role") != "assistant":
        return ""
    return text_of(chat[-1]).strip()


def stats_of(stats_html: Any) -> dict[str, str]:
    """{label: value} of the app's statistics table; {} for a skip update."""
    return dict(re.findall(r"<td>([^<]+)</td><td class='llma-v'>([^<]+)</td>", stats_html)) \
        if isinstance(stats_html, str) else {}


def _number(text: str | None) -> float | None:
    match = re.match(r"\d+(\.\d+)?", text or "")  # "11.98 s" → 11.98; "–" (missing) → None
    return float(match.group()) if match else None


def check_final(output: Any, question: str, req: Request) -> None:
    """Complete: our turn, with text, no error, and the stats table, which the app sends only
    once the generation has ended (a skipped output arrives as an update dict instead)."""
    answer, stats = answer_text(output), stats_of(output[3])
    chat = output[0] if answer else []
    ours = len(chat) >= 2 and question.strip() in text_of(chat[-2])
    req.answer_chars = len(answer)
    req.complete = ours and "⚠️ Error" not in answer and "Forward passes" in stats
    req.server_s, req.prompt_tokens = _number(stats.get("Total time")), _number(stats.get("Prompt tokens"))
    reused = re.search(r"\((\d+) reused\)", stats.get("Prompt tokens") or "")  # "1021 (512 reused)"
    req.reused_tokens = float(reused.group(1)) if reused else 0.0


def ask(client: Any, user: int, question: str, max_new_tokens: int, t0: float,
        timeout_s: float) -> Request:
    req = Request(user, question, start=round(time.monotonic() - t0, 2))
    began = time.monotonic()
    try:
        job = client.submit(question, **SETTINGS, max_new_tokens=max_new_tokens, api_name="/ask")
        while not job.done():
            outputs = job.outputs()
            if req.first_text_s is None and outputs and answer_text(outputs[-1]):
                req.first_text_s = round(time.monotonic() - began, 2)
            if time.monotonic() - began > timeout_s:
                job.cancel()
                raise TimeoutError(f"no answer after {timeout_s:.0f} s")
            time.sleep(POLL_S)
        job.result()  # re-raises a server-side error
        outputs = job.outputs()
        if not outputs:
            raise RuntimeError("the job finished without any output")
        check_final(outputs[-1], question, req)
        req.ok = True
    except Exception as exc:  # every failure is a figure in the report, not a crash of the run
        req.error = f"{type(exc).__name__}: {exc}"
        log.warning("user %d: %r failed: %s", user, question, req.error)
    req.latency_s = round(time.monotonic() - began, 2)
    req.end = round(time.monotonic() - t0, 2)
    if req.ok and req.first_text_s is None:
        req.first_text_s = req.latency_s  # the whole answer arrived between two polls
    log.info("user %d: %.1f s (first text %.1f s), complete=%s", user, req.latency_s,
             req.first_text_s or 0.0, req.complete)
    return req


def run_user(url: str, user: int, questions: Sequence[str], t0: float, deadline: float,
             max_new_tokens: int, timeout_s: float, out: list[Request]) -> None:
    """Question after question (from an offset of its own) in one session until the deadline."""
    from gradio_client import Client

    try:
        client = Client(url, verbose=False, download_files=False, analytics_enabled=False)
    except Exception as exc:
        log.warning("user %d could not connect: %s", user, exc)
        out.append(Request(user, "(connect)", round(time.monotonic() - t0, 2),
                           error=f"connect: {type(exc).__name__}: {exc}"))
        return
    turn = 0
    try:
        while time.monotonic() < deadline:  # none after it; in-flight ones finish and count
            question = questions[(user + turn) % len(questions)]
            out.append(ask(client, user, question, max_new_tokens, t0, timeout_s))  # atomic
            turn += 1
    finally:
        client.close()  # the user leaves: its heartbeat ends, so the app may drop the session


# -- the load (figures: reliability/load_report.py) ------------------------------------------
def run_load(url: str, pid: int | None, users: int, seconds: float, questions: Sequence[str],
             max_new_tokens: int = 48, timeout_s: float = 1800, sample_s: float = 2.0,
             warmup: bool = True) -> dict[str, Any]:
    """`users` simultaneous sessions for `seconds`: the summary, every request, the RSS samples."""
    samples: list[tuple[float, float]]
    results: list[Request]
    if urlparse(url).hostname not in LOOPBACK:
        raise ValueError(f"loopback only: refusing to load {url}")
    if warmup:  # loads the answer cache's embedder and warms torch: RSS "start" is steady state
        from gradio_client import Client

        client = Client(url, verbose=False, download_files=False, analytics_enabled=False)
        first = ask(client, -1, questions[0], max_new_tokens, time.monotonic(), timeout_s)
        client.close()
        if not first.complete:
            raise RuntimeError(f"warm-up question failed: {first.error or 'incomplete answer'}")
    t0, loadavg_start = time.monotonic(), os.getloadavg()
    stop, samples, results = threading.Event(), [], []
    sampler = rss_sampler(pid, t0, sample_s, stop, samples) if pid else None
    if not pid:
        log.warning("no server pid (--pid): RSS is not sampled")
    threads = [threading.Thread(target=run_user, name=f"user-{u}", daemon=True,
                                args=(url, u, questions, t0, t0 + seconds, max_new_tokens,
                                      timeout_s, results)) for u in range(users)]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():  # short joins, so Ctrl-C still gets through
            thread.join(timeout=1.0)
    wall_s = time.monotonic() - t0
    stop.set()
    if sampler:
        sampler.join()
    report = summarize(results, samples, users, seconds, wall_s)
    report.update(loadavg_start=[round(x, 2) for x in loadavg_start],
                  loadavg_end=[round(x, 2) for x in os.getloadavg()], max_new_tokens=max_new_tokens,
                  requests_detail=[asdict(r) for r in sorted(results, key=lambda r: r.start)],
                  rss_samples=samples)
    return report


# -- the command line ------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=20)
    p.add_argument("--minutes", type=float, default=5.0, help="no new question after this")
    p.add_argument("--json", type=Path, default=REPORT_DIR / "load.json", help="report (+ .md beside it)")
    p.add_argument("--url", help="a running app on 127.0.0.1 (default: start one)")
    p.add_argument("--pid", type=int, help="with --url: the server's pid, for its RSS")
    p.add_argument("--docs", type=Path, default=ROOT / "data" / "docs")
    p.add_argument("--index", type=Path, help="index folder (default: a temporary copy of indexes/demo)")
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--timeout", type=float, default=1800, help="seconds before a request counts as failed")
    p.add_argument("--sample-every", type=float, default=2.0, help="RSS sampling interval, seconds")
    return p.parse_args(argv)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # SIGTERM like Ctrl-C: the finally that stops the app still runs


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    signal.signal(signal.SIGTERM, _interrupt)
    args = parse_args(argv)
    command = "python -m reliability.load " + shlex.join(sys.argv[1:] if argv is None else argv)
    head = header(command)  # taken first: the commit and date the run started from

    def load(url: str, pid: int | None) -> dict[str, Any]:
        return run_load(url, pid, args.users, args.minutes * 60, load_questions(),
                        args.max_new_tokens, args.timeout, args.sample_every)

    if args.url:
        report = load(args.url, args.pid)
    else:
        with app_server(args.docs, args.index, args.max_new_tokens) as (url, pid):
            report = load(url, pid)
    report = {**head, **report}
    markdown = to_markdown(report)
    write_report(args.json, report, markdown)
    print(markdown)
    return 1 if report["failed"] or report["incomplete"] or not report["requests"] else 0


if __name__ == "__main__":
    sys.exit(main())
