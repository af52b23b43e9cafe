"""What every reliability report carries: where and when it ran, and how it is written."""
from __future__ import annotations

import ctypes
import datetime
import json
import logging
import os
import platform
from pathlib import Path

import psutil

from benchmarks.report import commit, cpu_name

ROOT = Path(__file__).resolve().parent.parent
REPORT_DIR = ROOT / "benchmarks" / "results" / "reliability"
log = logging.getLogger(__name__)


def header(command: str) -> dict[str, object]:
    """The machine, the date, the commit and the exact command, for the top of a report."""
    return {"command": command, "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "machine": f"{platform.machine()} ({cpu_name()}), {os.cpu_count()} CPUs, "
                       f"{psutil.virtual_memory().total / 2**30:.0f} GiB, {platform.system()}",
            "python": platform.python_version(), "git_commit": commit() or "unknown"}


def rss_mb(pid: int | None = None) -> float:
    """Resident memory of a process (default: this one) in MiB."""
    return psutil.Process(pid).memory_info().rss / 2**20


def trim_heap() -> None:
    """Give freed heap pages back to the OS (glibc), so RSS shows memory in use, not fragmentation."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        log.warning("malloc_trim is not available here; RSS includes freed heap pages")


def write_report(path: Path, report: dict[str, object], markdown: str) -> None:
    """The figures as JSON at `path` and as markdown beside it (.md)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    path.with_suffix(".md").write_text(markdown)


def run_markdown(title: str, where: str, report: dict[str, object]) -> str:
    """A long run's report: title, command, where and when, its figures (floats to two decimals)
    and its verdict."""
    figures = report["figures"]
    assert isinstance(figures, dict)
    rows = "\n".join(f"| {k} | {v:.2f} |" if isinstance(v, float) else f"| {k} | {v} |"
                     for k, v in figures.items())
    return (f"# {title}\n\n`{report['command']}`\n\n{where}, {report['date']}, commit "
            f"{report['git_commit']}\n\n| figure | value |\n|---|---|\n{rows}\n\n"
            f"Verdict: {report['verdict']}\n")
