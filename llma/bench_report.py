"""The benchmarks' report files: the markdown table of `python -m llma.bench` and the JSON beside it."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path


def markdown(report: dict[str, object]) -> str:
    lines = [f"# {report['dataset']} ({report['mode']} decoding), {report['n_prompts']} prompts",
             "", f"Device: {report['device']}. Command: `{report['command']}`", "",
             f"Our greedy/llma: backend {report.get('backend')}; name@backend: the same through that backend; "
             "name+rowsN: the same with N drafts verified side by side per step; name+treeN: N drafts packed "
             "into the one block (treeN/B: a block of B rows); own greedy: greedy through the same backend (and "
             "rows or tree). Speedups compare the same prompts.", "",
             f"LLMA drafting settings (on our backend; what the command leaves unset is the backend's "
             f"default): {report.get('llma_settings', 'not recorded')}", "",
             "| method | prompts | tok/s | tokens/forward | acceptance | speedup vs our greedy | vs HF greedy | "
             "vs own greedy | ms/forward | identical to our greedy | to own greedy | to HF greedy |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        lines.append(f"| {r['method']} | {r['prompts']} | {r['tokens_per_s']} | {r['tokens_per_forward'] or '-'} | "
                     f"{r['acceptance_rate'] or '-'} | {r['speedup_vs_greedy']}x | {r['speedup_vs_hf_greedy']}x | "
                     f"{r.get('speedup_vs_own_greedy', '-')}x | {r.get('ms_per_forward') or '-'} | "
                     f"{r['identical_to_greedy']:.0%} | {r['identical_to_own_greedy']:.0%} | "
                     f"{r['identical_to_hf_greedy']:.0%} |")
    lines += ["", f"Commit {report.get('commit') or 'not recorded'}.", "", f"Versions: {report['versions']}", ""]
    return "\n".join(lines)


def commit() -> str | None:
    """The code's commit: LLMA_GIT_COMMIT where the tree travelled without .git (the GPU machine).
    (reliability/report.py keeps its own: importing llma there would load torch into light tools.)"""
    if os.environ.get("LLMA_GIT_COMMIT"):
        return os.environ["LLMA_GIT_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def write_report(path: Path, report: dict[str, object], table: str) -> None:
    """The results as JSON at `path` (with the commit) and the markdown table beside it (.md)."""
    report.setdefault("commit", commit())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    path.with_suffix(".md").write_text(table)
