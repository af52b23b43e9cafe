"""The crash-safety campaign's summary and markdown report (`python -m reliability.crash`)."""
from __future__ import annotations

import json


def summarize(records: list[dict], wall_s: float) -> dict:
    """Outcomes, phases and modes count the killed builds only; failures and recovery count all."""
    killed = [r for r in records if r["killed"]]

    def count(key: str) -> dict[str, int]:
        return {v: sum(r[key] == v for r in killed) for v in sorted({r[key] for r in killed})}
    return {"runs": len(records), "outcomes": count("outcome"), "phases": count("phase"),
            "modes": count("mode"), "killed": len(killed),
            "recovery_ok": sum(r["recovery_ok"] for r in records),
            "failures": sum(not r["ok"] for r in records), "wall_s": round(wall_s, 1)}


def markdown(report: dict) -> str:
    head, ref, summ, sets = report["header"], report["reference"], report["summary"], report["settings"]
    ev, total = ref["events"], ref["seconds"]
    moments = ", ".join(f"{k.replace('_', ' ')} {v:.3f}s ({v / total:.1%})" for k, v in ev.items())
    lines = [
        "# Crash safety: SIGKILL during `python -m index build`", "",
        f"Command: `{head['command']}`  ", f"{head['date']}, {head['machine']}, Python "
        f"{head['python']}, commit {head['git_commit']}", "",
        f"State A: {sets['files']} documents from `{sets['docs']}` ({ref['chunks_a']} chunks); "
        f"state B: {json.dumps(sets['changes'])} ({ref['chunks_b']} chunks).  ",
        f"Reference build A -> B (uninterrupted, same command): {total:.2f}s; {moments}; "
        f"save window {ref['save_window_s'] * 1000:.1f} ms, commit-to-cleanup "
        f"{ref['cleanup_window_s'] * 1000:.2f} ms.  ",
        f"Kills: {summ['modes']} (uniform: over the whole reference duration; save: over twice "
        f"the save window, counted from the run's first new data file; commit: over 1.5 times "
        f"the commit-to-cleanup window, counted from the run's manifest replacement). Each killed "
        f"folder is judged by load_index in a fresh process, then rebuilt there without "
        f"interruption.", "",
        "| figure | value |", "|---|---|",
        f"| outcomes after kill | {summ['outcomes']} |", f"| phase at kill | {summ['phases']} |",
        f"| builds killed / started (the rest finished before their kill time) | "
        f"{summ['killed']}/{summ['runs']} |",
        f"| recovery OK (rebuild = B, no stale files) | {summ['recovery_ok']}/{summ['runs']} |",
        f"| failures (partial/mixed index, unclean error, bad recovery) | {summ['failures']} |",
        f"| wall time | {summ['wall_s']:.0f}s (load average at start / end: "
        f"{summ['load_avg_1_5_15']['start'][0]:.1f} / {summ['load_avg_1_5_15']['end'][0]:.1f}) |", "",
        "| run | mode | kill at (s) | fraction of reference build | after first new file (ms) "
        "| phase at kill | outcome | recovery |", "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["runs"]:
        outcome = r["outcome"] + (f": {r['detail'][:160]}" if r["detail"] else "")
        after = "" if r["after_first_new_file_ms"] is None else r["after_first_new_file_ms"]
        lines.append(f"| {r['run']} | {r['mode']} | {r['kill_s']:.3f} | {r['kill_fraction']:.3f} | "
                     f"{after} | {r['phase']} | {outcome} | "
                     f"{'OK' if r['recovery_ok'] else 'FAIL'}: {r['recovery']} |")
    return "\n".join(lines) + "\n"
