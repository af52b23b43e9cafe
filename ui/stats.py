"""Statistics of one answer (and of a comparison with plain greedy) as HTML and plot data."""
from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

STEP_COLUMNS = ["step", "accepted", "kind"]
# Why an answer ended, in plain words (the engine's and the pipeline's stop reasons).
STOP_REASONS = {"eos": "end of answer", "max_new_tokens": "token limit", "context_full": "context window full",
                "stop_sequence": "stop sequence", "stop_string": "stop string",
                "repetition": "repetition (the answer began to loop)"}


def _num(stats: Mapping[str, Any], key: str) -> float | None:
    value = stats.get(key) if stats else None
    return float(value) if isinstance(value, (int, float)) else None


def _fmt(value: float | None, pattern: str) -> str:
    return "–" if value is None else pattern.format(value)


def stat_rows(stats: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(label, value) pairs in display order; missing values show as a dash."""
    return [
        ("Tokens", _fmt(_num(stats, "tokens"), "{:.0f}")),
        ("Forward passes", _fmt(_num(stats, "forward_passes"), "{:.0f}")),
        ("Tokens per forward", _fmt(_num(stats, "tokens_per_forward"), "{:.2f}")),
        ("Copied tokens", _fmt(_num(stats, "copied_share"), "{:.0%}")),
        ("Acceptance rate", _fmt(_num(stats, "acceptance_rate"), "{:.0%}")),
        ("Tokens / s", _fmt(_num(stats, "tokens_per_s"), "{:.1f}")),
        ("Time to first token", _fmt(_num(stats, "ttft_s"), "{:.2f} s")),
        ("Total time", _fmt(_num(stats, "wall_s"), "{:.2f} s")),
        ("Prompt tokens", _fmt(_num(stats, "prompt_tokens"), "{:.0f}")),
    ]


def stats_html(stats: Mapping[str, Any] | None, stop_reason: str | None = None) -> str:
    if not stats:
        return '<div class="llma-muted">Ask a question to see its statistics.</div>'
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td class='llma-v'>{html.escape(v)}</td></tr>"
                   for k, v in stat_rows(stats))
    if stop_reason:
        said = STOP_REASONS.get(str(stop_reason), str(stop_reason))
        rows += f"<tr><td>Stopped by</td><td class='llma-v'>{html.escape(said)}</td></tr>"
    return f'<table class="llma-stats" id="llma-stats-table">{rows}</table>'


def stats_footer(stats: Mapping[str, Any] | None) -> str:
    """A one-line summary under each chat answer (plain text; the caller escapes it)."""
    if not stats:
        return ""
    tokens, fwd = _num(stats, "tokens"), _num(stats, "forward_passes")
    parts = [f"{tokens:.0f} tokens" if tokens is not None else None,
             f"{fwd:.0f} forward passes" if fwd is not None else None,
             _fmt(_num(stats, "tokens_per_forward"), "{:.2f} tok/forward"),
             _fmt(_num(stats, "copied_share"), "{:.0%} copied"),
             _fmt(_num(stats, "tokens_per_s"), "{:.1f} tok/s")]
    return " · ".join(p for p in parts if p and p != "–")


def steps_frame(steps: Sequence[Mapping[str, Any]] | None) -> pd.DataFrame:
    """Accepted copied tokens per decoding step (one row per forward pass)."""
    rows = []
    for i, step in enumerate(steps or (), 1):
        accepted = step.get("accepted", 0) if isinstance(step, Mapping) else 0
        proposed = step.get("proposed", 0) if isinstance(step, Mapping) else 0
        accepted = int(accepted or 0)
        kind = "copied" if accepted else ("rejected draft" if proposed else "no draft")
        rows.append({"step": i, "accepted": accepted, "kind": kind})
    frame = pd.DataFrame(rows, columns=STEP_COLUMNS)
    # Fixed dtypes even when empty: the plot picks its axis types from the first value it gets.
    return frame.astype({"step": "int64", "accepted": "int64", "kind": "str"})


def speedup_text(comparison: Any) -> str:
    """The median speedup and, over several measured pairs, its spread: "2.10× (median of 3
    alternating runs, 1.95–2.31×)"; "–" when there is no number."""
    speedup = comparison.speedup
    if not isinstance(speedup, (int, float)):
        return "–"
    speedups = [s for s in getattr(comparison, "speedups", None) or () if isinstance(s, (int, float))]
    if len(speedups) < 2:
        return f"{speedup:.2f}×"
    return (f"{speedup:.2f}× (median of {len(speedups)} alternating runs, "
            f"{min(speedups):.2f}–{max(speedups):.2f}×)")


def comparison_html(comparison: Any) -> str:
    """Speedup (median and spread) and identity of LLMA against plain greedy on the same question
    with the same references; the table shows the median pair."""
    llma = comparison.llma
    greedy = comparison.greedy
    identical = bool(comparison.identical)
    verdict = ("identical outputs ✓" if identical else "outputs DIFFER ✗")
    speed_txt = html.escape(speedup_text(comparison))

    def col(ans: Any, name: str) -> str:
        st = getattr(ans, "stats", {}) or {}
        return (f"<tr><td>{name}</td><td class='llma-v'>{_fmt(_num(st, 'wall_s'), '{:.2f} s')}</td>"
                f"<td class='llma-v'>{_fmt(_num(st, 'forward_passes'), '{:.0f}')}</td>"
                f"<td class='llma-v'>{_fmt(_num(st, 'tokens'), '{:.0f}')}</td>"
                f"<td class='llma-v'>{_fmt(_num(st, 'tokens_per_s'), '{:.1f}')}</td></tr>")

    table = ("<table class='llma-stats'><tr><th></th><th>time</th><th>forwards</th><th>tokens</th>"
             f"<th>tok/s</th></tr>{col(llma, 'LLMA')}{col(greedy, 'plain greedy')}</table>")
    diff = ""
    if not identical:
        diff = ("<details><summary>plain greedy output</summary><div class='llma-passage-text'>"
                f"{html.escape(getattr(greedy, 'text', '') or '')}</div></details>")
    return (f"<div id='llma-compare'><div class='llma-speedup'><b>Speedup: {speed_txt}</b> · "
            f"{verdict}</div>{table}{diff}</div>")


CSS = """
table.llma-stats { width: 100%; border-collapse: collapse; font-size: 0.9em; border: none !important; }
table.llma-stats td, table.llma-stats th { padding: 3px 8px !important; border: none !important;
  border-bottom: 1px solid var(--border-color-primary, #eee) !important; background: transparent !important; }
table.llma-stats th { font-weight: 600; text-align: right; }
table.llma-stats tr, table.llma-stats tbody, table.llma-stats thead { border: none !important;
  background: transparent !important; }
table.llma-stats td.llma-v { text-align: right; font-variant-numeric: tabular-nums; }
.llma-speedup { margin-bottom: 0.4em; }
"""
