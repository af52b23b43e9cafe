"""Issue #24: a `.build.lock` left by a killed build neither blocks nor re-indexes a later start;
a live build's lock names its pid; the build reports its progress."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from index import build_index, has_index, lock_holder
from index.store import LOCK

ROOT = Path(__file__).resolve().parents[2]
HOLD = ("import sys, time; from pathlib import Path; from index.store import build_lock\n"
        "with build_lock(Path(sys.argv[1])):\n"
        "    print('locked', flush=True)\n"
        "    time.sleep(120)\n")


def hold_lock(out: Path) -> subprocess.Popen:
    """A process that takes the index's build lock and keeps it (as a build in progress would)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE,
                            text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_a_killed_builds_lock_neither_blocks_nor_reindexes(corpus: Path, tmp_path: Path, embedder) -> None:
    out = tmp_path / "idx"
    first = build_index(corpus, out, embedder, progress=False)
    assert first.embedded_chunks > 0
    holder = hold_lock(out)
    try:
        assert lock_holder(out) == holder.pid  # a live build: its pid is known
    finally:
        holder.send_signal(signal.SIGKILL)  # killed mid-build: .build.lock stays behind
        holder.wait()
    assert (out / LOCK).exists() and lock_holder(out) is None
    started = time.monotonic()
    again = build_index(corpus, out, embedder, progress=False)
    assert time.monotonic() - started < 30  # not waiting for the dead holder
    assert again.embedded_chunks == 0 and not again.added and not again.updated  # no re-index
    assert sorted(again.unchanged) == sorted(first.added)
    assert lock_holder(out) is None and (out / LOCK).read_text() == ""  # released, pid cleared


def test_a_folder_with_only_a_killed_first_builds_leftovers_has_no_index(corpus: Path, tmp_path: Path,
                                                                         embedder) -> None:
    out = tmp_path / "idx"
    holder = hold_lock(out)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    (out / "index-1-dead.faiss").write_bytes(b"partial")  # an uncommitted data file
    assert not has_index(out)
    report = build_index(corpus, out, embedder, progress=False)
    assert has_index(out) and report.embedded_chunks > 0
    assert not (out / "index-1-dead.faiss").exists()  # the leftover is cleaned by the commit


def test_build_reports_progress(corpus: Path, tmp_path: Path, embedder) -> None:
    events: list[tuple[str, int, int]] = []
    report = build_index(corpus, tmp_path / "idx", embedder, progress=False,
                         on_progress=lambda *e: events.append(e))
    reading = [e for e in events if e[0] == "reading"]
    embedding = [e for e in events if e[0] == "embedding"]
    assert [e[1] for e in reading] == list(range(len(reading))) and reading[0][2] == 3
    assert embedding[-1] == ("embedding", report.num_chunks, report.num_chunks)
    assert [e[1] for e in embedding] == sorted(e[1] for e in embedding)
