"""The folder side of the crash-safety campaign (`python -m reliability.crash`): what an index
folder holds (fingerprint, stale files), a build started, watched at ~1 kHz and SIGKILLed at a
planned moment, and the probe that judges a killed folder from a fresh process."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from index import IndexingError, build_index, load_index
from reliability.report import ROOT

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
       "TOKENIZERS_PARALLELISM": "false"}
MANIFEST = "manifest.json"
# What a build writes besides the manifest (see index/store.py); any of these
# that the manifest does not name is left over from an earlier build.
GENERATION_PREFIXES = ("index-", "chunks-", "embeddings-", MANIFEST + ".tmp-")
QUERIES = ("what does the with statement do?", "how is an exception raised?")
POLL_S = 0.001  # the save window lasts a few ms: watch the folder at ~1 kHz
SCORE_TOL = 1e-4
# The folder event that starts the clock of each targeted kill mode (see run_build).
TRIGGERS = {"save": "first_new_file", "commit": "commit"}


# --- what a folder holds ---------------------------------------------------------------------

def fingerprint(index_dir: Path) -> dict:
    """Everything that tells two index states apart; raises what load_index raises."""
    idx = load_index(index_dir)
    texts = hashlib.sha256("\0".join(c.text for c in idx.chunks).encode()).hexdigest()
    return {
        "sources": idx.sources,
        "chunk_ids": [c.id for c in idx.chunks],
        "manifest_chunk_ids": [i for rel in idx.sources for i in idx.manifest.files[rel].chunk_ids],
        # load_index has already checked that faiss holds exactly this many vectors
        "num_vectors": len(idx),
        "texts_sha256": texts,
        "search": [[[h.chunk.id, h.score] for h in idx.search(q, k=5)] for q in QUERIES],
    }


def same_state(got: dict, ref: dict) -> bool:
    """Equal fingerprints; scores within SCORE_TOL (float noise, not content)."""
    if any(got[key] != ref[key] for key in ref if key != "search"):
        return False
    hits, ref_hits = sum(got["search"], []), sum(ref["search"], [])
    return len(hits) == len(ref_hits) and all(
        g[0] == r[0] and abs(g[1] - r[1]) <= SCORE_TOL for g, r in zip(hits, ref_hits))


def stale_files(index_dir: Path) -> list[str]:
    """Generation files that the manifest does not point at."""
    manifest = json.loads((index_dir / MANIFEST).read_text())
    live = {entry["name"] for entry in manifest["data_files"].values()}
    return sorted(p.name for p in index_dir.iterdir()
                  if p.name.startswith(GENERATION_PREFIXES) and p.name not in live)


def generation_files(index_dir: Path) -> set[str]:
    return {n for n in os.listdir(index_dir) if n.startswith(GENERATION_PREFIXES)}


# --- the probe: a fresh subprocess, started after the kills ---------------------------------

def _try_fingerprint(index_dir: Path) -> dict:
    try:
        return {"state": fingerprint(index_dir)}
    except IndexingError as exc:
        return {"error": f"{type(exc).__name__}: {exc}", "clean": True}
    except Exception as exc:  # noqa: BLE001 - an unexpected exception is what we hunt for
        return {"error": f"{type(exc).__name__}: {exc}", "clean": False,
                "traceback": traceback.format_exc()}


def probe(index_dir: Path, docs: Path) -> dict:
    """Load the folder as the killed build left it, then rebuild it uninterrupted."""
    result: dict = {"dir": str(index_dir), "after_kill": _try_fingerprint(index_dir)}
    started = time.monotonic()
    try:
        build_index(docs, index_dir, progress=False)
        result["recovery"] = {"build_s": round(time.monotonic() - started, 2),
                              "state": fingerprint(index_dir), "stale_files": stale_files(index_dir)}
    except Exception as exc:  # noqa: BLE001 - reported as a failed recovery
        result["recovery"] = {"error": f"{type(exc).__name__}: {exc}"}
    return result


def run_probe(dirs: list[Path], docs: Path) -> dict[str, dict]:
    """Judge killed folders in one fresh process (a process start costs seconds of imports);
    if it dies, the folders it did not report are judged again one process each."""
    cmd = [sys.executable, "-m", "reliability.crash", "--docs", str(docs), "--probe", *map(str, dirs)]
    done = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=1800)
    results = {}
    for line in done.stdout.splitlines():
        with contextlib.suppress(ValueError, TypeError, KeyError):
            results[json.loads(line)["dir"]] = json.loads(line)
    missing = [d for d in dirs if str(d) not in results]
    if len(dirs) == 1 and missing:
        tail = done.stderr.strip()[-2000:]
        return {str(dirs[0]): {"after_kill": {"error": f"probe exited {done.returncode}: {tail}",
                                              "clean": False}}}
    for d in missing:
        results.update(run_probe([d], docs))
    return results


# --- starting, watching and killing a build -------------------------------------------------

@dataclass
class Kill:
    mode: str  # "uniform", "save" or "commit": see TRIGGERS
    delay: float  # seconds after the trigger event

    def due(self, now: float, events: dict[str, float]) -> bool:
        if self.mode == "uniform":
            return now >= self.delay
        trigger = TRIGGERS[self.mode]
        return trigger in events and now >= events[trigger] + self.delay


@dataclass
class Trace:
    seconds: float  # start to exit
    returncode: int
    killed_at: float | None = None
    events: dict[str, float] = field(default_factory=dict)  # seconds after start


def _observe(out: Path, old_files: set[str], old_inode: int, events: dict[str, float],
             now: float) -> None:
    """Record the first moment each step of a save becomes visible in the folder."""
    names = generation_files(out)
    if "first_new_file" not in events and names - old_files:
        events["first_new_file"] = now
    try:
        if "commit" not in events and os.stat(out / MANIFEST).st_ino != old_inode:
            events["commit"] = now  # os.replace gives manifest.json the temp file's inode
    except FileNotFoundError:
        events.setdefault("manifest_missing", now)
    if "commit" in events and "old_removed" not in events and not names & old_files:
        events["old_removed"] = now


def run_build(docs: Path, out: Path, kill: Kill | None, log_path: Path) -> Trace:
    """`python -m index build docs --out out`, watched, and SIGKILLed when `kill` is due."""
    old_files, old_inode = generation_files(out), os.stat(out / MANIFEST).st_ino
    cmd = [sys.executable, "-m", "index", "build", str(docs), "--out", str(out), "--no-progress"]
    events: dict[str, float] = {}
    killed_at = None
    with log_path.open("w") as log_fh:
        started = time.monotonic()
        # Its own session, so that the kill reaches the build and nothing else.
        proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=log_fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
        while proc.poll() is None:
            now = time.monotonic() - started
            _observe(out, old_files, old_inode, events, now)
            if kill is not None and killed_at is None and kill.due(now, events):
                os.killpg(proc.pid, signal.SIGKILL)
                killed_at = now
            # During the save (a few ms) poll flat out, so that events are timed to ~0.1 ms.
            saving = "first_new_file" in events and "old_removed" not in events
            time.sleep(0 if saving else POLL_S)
        seconds = time.monotonic() - started
    _observe(out, old_files, old_inode, events, seconds)
    return Trace(round(seconds, 4), proc.returncode, killed_at,
                 {k: round(v, 5) for k, v in events.items()})


def folder_phase(out: Path, old_files: set[str], old_manifest: bytes) -> str:
    """How far the build got, judged from the files it left."""
    if not (out / MANIFEST).is_file():
        return "manifest missing"
    names = generation_files(out)
    if (out / MANIFEST).read_bytes() == old_manifest:
        return "before save" if names == old_files else "writing new generation"
    return "committed, old generation not removed" if names & old_files else "committed"
