"""Crash safety: SIGKILL `python -m index build` at random moments; the index must survive.

    python -m reliability.crash --runs 20 --json benchmarks/results/reliability/crash.json [--seed N]

A subset of the docs is indexed (state A), then the docs change (2 files added,
2 modified, 2 removed), so the next build must re-embed and commit state B.
One uninterrupted build A -> B is timed and its folder watched (first new data
file, manifest replaced, old generation removed). Each run copies state A to a
fresh folder, starts the same build and SIGKILLs it at a moment drawn
uniformly over the whole reference duration ("uniform"), or, because writing,
commit and cleanup last only milliseconds, at a moment drawn over the save
window counted from when the run's first new data file appears ("save"), or
over the commit-to-cleanup window counted from the manifest's replacement
("commit").
After the kills, a fresh subprocess (never the killer) runs load_index on each
folder: it must hold exactly A or exactly B, or raise a clean IndexingError;
it then rebuilds the folder without interruption, which must give B and leave
no stale generation files.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shlex
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from index import build_index
from reliability.crash_folder import (MANIFEST, POLL_S, Kill, Trace, fingerprint, folder_phase,
                                      generation_files, probe, run_build, run_probe, same_state,
                                      stale_files)
from reliability.crash_report import markdown, summarize
from reliability.report import REPORT_DIR, ROOT, header, write_report

log = logging.getLogger(__name__)

MAX_DOC_BYTES = 16_000  # leave the largest pages out, so that one build takes seconds
MAX_ATTEMPTS = 2  # builds started per wanted kill, at most


# --- a campaign -----------------------------------------------------------------------------

@dataclass
class Campaign:
    work: Path
    docs: Path
    ref_a: Path
    fp_a: dict
    fp_b: dict
    reference: Trace
    changes: dict[str, list[str]]


def _make_docs(src: Path, dest: Path, files: int, max_bytes: int,
               rng: random.Random) -> list[Path]:
    """Copy `files` random documents to dest (state A); return 2 more for later additions."""
    pool = sorted(p for p in src.iterdir() if p.suffix in {".md", ".txt"}
                  and p.stat().st_size <= max_bytes)
    if files < 5 or len(pool) < files + 2:
        raise ValueError(f"need 5 <= files <= {len(pool) - 2} (documents in {src} up to "
                         f"{max_bytes} bytes), got {files}")
    picked = rng.sample(pool, files + 2)
    dest.mkdir(parents=True)
    for path in picked[:files]:
        shutil.copy(path, dest / path.name)
    return picked[files:]


def _change_docs(docs: Path, extra: list[Path], rng: random.Random) -> dict[str, list[str]]:
    """Add 2, modify 2, remove 2 files: B differs from A in every way a build handles."""
    names = sorted(p.name for p in docs.iterdir())
    rng.shuffle(names)
    modified, removed = names[:2], names[2:4]
    for name in modified:
        with (docs / name).open("a", encoding="utf-8") as fh:
            fh.write(f"\n\n## Crash-safety note {rng.randrange(10**6)}\n\nThis paragraph was added "
                     "after the first build, so this file has to be chunked and embedded again.\n")
    for name in removed:
        (docs / name).unlink()
    for path in extra:
        shutil.copy(path, docs / path.name)
    return {"added": [p.name for p in extra], "modified": modified, "removed": removed}


def prepare(src: Path, work: Path, files: int, max_bytes: int, rng: random.Random) -> Campaign:
    """Build state A, change the docs, time and watch one uninterrupted build to state B."""
    docs, ref_a, ref_b = work / "docs", work / "ref-a", work / "ref-b"
    extra = _make_docs(src, docs, files, max_bytes, rng)
    build_index(docs, ref_a, progress=False)  # in-process: A is only the starting point
    changes = _change_docs(docs, extra, rng)
    shutil.copytree(ref_a, ref_b)
    reference = run_build(docs, ref_b, None, work / "ref-b.log")
    if reference.returncode != 0:
        raise RuntimeError(f"reference build failed: {(work / 'ref-b.log').read_text()[-2000:]}")
    fp_a, fp_b = fingerprint(ref_a), fingerprint(ref_b)
    if same_state(fp_a, fp_b) or stale_files(ref_b) or "old_removed" not in reference.events:
        raise RuntimeError("reference build A -> B did not commit a distinct, clean state B")
    log.info("reference build A -> B: %.2fs, events %s", reference.seconds, reference.events)
    return Campaign(work, docs, ref_a, fp_a, fp_b, reference, changes)


def save_window(reference: Trace) -> float:
    """Seconds from the first new data file to the old generation's removal (>= 5 ms)."""
    events = reference.events
    return max(events["old_removed"] - events["first_new_file"], 0.005)


def cleanup_window(reference: Trace) -> float:
    """Seconds from the commit to the old generation's removal (>= 0.5 ms)."""
    return max(reference.events["old_removed"] - reference.events["commit"], 0.0005)


def plan_kills(runs: int, reference: Trace, rng: random.Random, save_every: int = 3) -> list[Kill]:
    """Every `save_every`-th kill aims at the save, alternately over twice the reference
    save window (a run's save can be slower than the reference's) and over 1.5 times its
    commit-to-cleanup window; the others are uniform over the whole build."""
    kills = []
    for i in range(runs):
        if (i + 1) % save_every:
            kills.append(Kill("uniform", rng.uniform(0, reference.seconds)))
        elif len([k for k in kills if k.mode != "uniform"]) % 2 == 0:
            kills.append(Kill("save", rng.uniform(0, 2 * save_window(reference))))
        else:
            kills.append(Kill("commit", rng.uniform(0, 1.5 * cleanup_window(reference))))
    return kills


def _outcome(after_kill: dict, camp: Campaign) -> tuple[str, str]:
    if "state" in after_kill:
        if same_state(after_kill["state"], camp.fp_a):
            return "A", ""
        if same_state(after_kill["state"], camp.fp_b):
            return "B", ""
        return "MIXED", f"{after_kill['state']['num_vectors']} vectors, matching neither A nor B"
    return ("error" if after_kill.get("clean") else "CRASH"), after_kill["error"]


def _recovery(recovery: dict | None, camp: Campaign) -> tuple[bool, str]:
    if recovery is None or "error" in recovery:
        return False, (recovery or {}).get("error", "no recovery result")
    if not same_state(recovery["state"], camp.fp_b):
        return False, "rebuilt index differs from state B"
    if recovery["stale_files"]:
        return False, f"stale files left: {', '.join(recovery['stale_files'])}"
    return True, f"state B in {recovery['build_s']}s, no stale files"


def kill_one(number: int, kill: Kill, camp: Campaign) -> dict:
    """Copy state A to a fresh folder, start the A -> B build there and kill it."""
    out = camp.work / f"run-{number:02d}"
    shutil.copytree(camp.ref_a, out)
    old_files, old_manifest = generation_files(out), (out / MANIFEST).read_bytes()
    trace = run_build(camp.docs, out, kill, camp.work / f"run-{number:02d}.log")
    killed = trace.killed_at is not None and trace.returncode == -signal.SIGKILL
    kill_s = trace.killed_at if killed else trace.seconds
    first_new = trace.events.get("first_new_file")
    record = {
        "run": number, "dir": str(out), "mode": kill.mode, "planned_delay_s": round(kill.delay, 4),
        "killed": killed, "kill_s": round(kill_s, 4),
        "kill_fraction": round(kill_s / camp.reference.seconds, 4),
        "after_first_new_file_ms": (round((kill_s - first_new) * 1e3, 1)
                                    if killed and first_new is not None else None),
        "returncode": trace.returncode,
        "phase": folder_phase(out, old_files, old_manifest) if killed else "exited before kill",
        "files_after_kill": sorted(os.listdir(out)), "events": trace.events,
    }
    log.info("run %d: %s kill at %.3fs (%s)", number, kill.mode, kill_s, record["phase"])
    return record


def judge(records: list[dict], camp: Campaign) -> None:
    """Outcome and recovery of every killed folder, as seen by a fresh process."""
    results = run_probe([Path(r["dir"]) for r in records], camp.docs)
    for record in records:
        result = results[record.pop("dir")]
        record["outcome"], record["detail"] = _outcome(result["after_kill"], camp)
        record["recovery_ok"], record["recovery"] = _recovery(result.get("recovery"), camp)
        record["ok"] = record["outcome"] in {"A", "B", "error"} and record["recovery_ok"]
        log.info("run %d: %s -> %s, recovery %s", record["run"], record["phase"],
                 record["outcome"], record["recovery"])


def run_campaign(src: Path, work: Path, runs: int, seed: int, files: int = 16,
                 save_every: int = 3, max_bytes: int = MAX_DOC_BYTES) -> dict:
    """The whole experiment in `work`; returns the report (without header)."""
    started, load_start = time.monotonic(), os.getloadavg()  # timings depend on other users
    rng = random.Random(seed)
    camp = prepare(src, work, files, max_bytes, rng)
    # A build can finish before its kill time (it ran faster than the reference): such a run is
    # reported but not counted, and builds are started until `runs` of them were really killed.
    records: list[dict] = []
    for i, kill in enumerate(plan_kills(MAX_ATTEMPTS * runs, camp.reference, rng, save_every)):
        if sum(r["killed"] for r in records) == runs:
            break
        records.append(kill_one(i + 1, kill, camp))
    judge(records, camp)
    return {
        "settings": {"runs": runs, "seed": seed, "docs": str(src), "files": files,
                     "max_bytes": max_bytes, "save_every": save_every, "changes": camp.changes,
                     "poll_s": POLL_S},
        "reference": {**asdict(camp.reference), "save_window_s": round(save_window(camp.reference), 5),
                      "cleanup_window_s": round(cleanup_window(camp.reference), 5),
                      "chunks_a": camp.fp_a["num_vectors"], "chunks_b": camp.fp_b["num_vectors"]},
        "summary": {**summarize(records, time.monotonic() - started),
                    "load_avg_1_5_15": {"start": load_start, "end": os.getloadavg()}},
        "runs": records,
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m reliability.crash", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20, help="builds to kill")
    parser.add_argument("--json", type=Path, default=REPORT_DIR / "crash.json",
                        help="report path (markdown is written beside it)")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--docs", type=Path, default=ROOT / "data" / "docs",
                        help="documents folder to take the subset from (with --probe: to rebuild)")
    parser.add_argument("--files", type=int, default=16, help="documents in state A")
    parser.add_argument("--max-bytes", type=int, default=MAX_DOC_BYTES,
                        help="only take documents up to this size")
    parser.add_argument("--save-every", type=int, default=3,
                        help="every N-th kill aims at the save/commit window")
    parser.add_argument("--probe", type=Path, nargs="+", help=argparse.SUPPRESS)  # the checker
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    if args.probe is not None:
        logging.basicConfig(level=logging.WARNING)
        for index_dir in args.probe:  # one line each, so a crash loses only what follows
            print(json.dumps(probe(index_dir, args.docs)), flush=True)
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    command = "python -m reliability.crash " + " ".join(shlex.quote(a) for a in argv)
    with tempfile.TemporaryDirectory(prefix="crash-") as work:
        report = {"header": header(command), **run_campaign(
            args.docs, Path(work), args.runs, args.seed, args.files, args.save_every, args.max_bytes)}
    write_report(args.json, report, markdown(report))
    summary = report["summary"]
    print(f"{summary['killed']} kills in {summary['runs']} builds: outcomes {summary['outcomes']}, phases {summary['phases']}, "
          f"recovery ok {summary['recovery_ok']}/{summary['runs']}, failures {summary['failures']}, "
          f"{summary['wall_s']:.0f}s; report {args.json}")
    return 0 if summary["failures"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
