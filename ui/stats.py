"""Statistics of one answer (and of a comparison with plain greedy) as HTML and plot data."""
from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

STEP_COLUMNS = ["step", "accepted", "source"]
# The highlight colours (ui.highlight's CSS), so the plot's bars match the marks in the answer.
KIND_COLORS = {"passage": "#d4a106", "history": "#3b82f6", "cache": "#16a34a", "output": "#db2777",
               "other": "#9333ea", "blank": "#9ca3af"}
KIND_NAMES = {"passage": "retrieved passages", "history": "earlier turns", "cache": "cached answers",
              "output": "repeated from this answer", "other": "other references",
              "blank": "spaces and line breaks"}
# The same kinds, short enough for the plot's legend.
PLOT_NAMES = {"passage": "passage", "history": "earlier turn", "cache": "cached answer",
              "output": "this answer", "other": "other", "blank": "spaces"}
STOP_REASONS = {
    "eos": "the model ended its answer",
    "max_new_tokens": "it reached the limit on new tokens",
    "stop_string": "a stop string appeared",
    "stop_sequence": "a stop sequence appeared",
    "context_full": "the model's context window was full",
    "stopped": "you pressed Stop",
    "repetition": "it started repeating itself in a loop",
}
HINTS = {
    "Forward passes": "How many times the model ran. Plain decoding runs it once per token.",
    "Tokens per forward": "Tokens gained per model run: 1.00 means no gain from copying.",
    "Copied tokens": "Tokens drafted from a highlighted source and confirmed by the model "
                     "(the highlights in the answer, by colour).",
    "Drafts confirmed": "Of the tokens drafted for copying, the share the model agreed with; the "
                        "rest were dropped and cost nothing but compute.",
    "Prompt tokens": ("What the model read first: instructions, earlier turns, passages, question; "
                      "\"reused\": its first tokens, which an earlier prompt starting the same way (this "
                      "chat's last turn) had computed, restored instead of computed again."),
    "Answers decoded together": "How many answers (this one included) shared each model run, on "
                                "average: other users' answers are decoded in the same runs, and "
                                "this answer is the same as if it ran alone.",
    "Why it ended": "The model ends an answer itself; otherwise the limit on new tokens, a stop "
                    "string, a detected loop or your Stop button ends it.",
}


def _num(stats: Mapping[str, Any] | None, key: str) -> float | None:
    value = stats.get(key) if stats else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _fmt(value: float | None, pattern: str) -> str:
    return "–" if value is None else pattern.format(value)


def copied_by_kind(steps: Sequence[Mapping[str, Any]] | None) -> dict[str, int]:
    """Accepted copied tokens per kind of source ("passage", "history", "cache", "output", or
    "other" where a step does not say), from the steps' own counts: they add up to the answer's
    `accepted_tokens`."""
    counts: dict[str, int] = {}
    for step in steps or ():
        accepted = int(step.get("accepted") or 0) if isinstance(step, Mapping) else 0
        if accepted:
            kind = step.get("source")
            kind = kind if kind in KIND_NAMES else "other"
            counts[kind] = counts.get(kind, 0) + accepted
    return counts


def stop_text(reason: str | None) -> str:
    return STOP_REASONS.get(reason or "", str(reason or "–"))


def stat_rows(stats: Mapping[str, Any], stop_reason: str | None = None) -> list[tuple[str, str]]:
    """(label, value) pairs in display order; missing values show as a dash."""
    tokens, copied = _num(stats, "tokens"), _num(stats, "accepted_tokens")
    proposed = _num(stats, "proposed_tokens")
    share = _num(stats, "copied_share")
    rate = _num(stats, "acceptance_rate")
    copied_txt = (f"{copied:.0f} of {tokens:.0f} ({share:.0%})" if None not in (copied, tokens, share)
                  else _fmt(share, "{:.0%}"))
    confirmed = (f"{copied:.0f} of {proposed:.0f} ({rate:.0%})" if None not in (copied, proposed, rate)
                 and proposed else _fmt(rate if proposed else None, "{:.0%}"))
    rows = [
        ("Tokens generated", _fmt(tokens, "{:.0f}")),
        ("Forward passes", _fmt(_num(stats, "forward_passes"), "{:.0f}")),
        ("Tokens per forward", _fmt(_num(stats, "tokens_per_forward"), "{:.2f}")),
        ("Copied tokens", copied_txt),
        ("Drafts confirmed", confirmed),
        ("Tokens / s", _fmt(_num(stats, "tokens_per_s"), "{:.1f}")),
        ("Time to first token", _fmt(_num(stats, "ttft_s"), "{:.2f} s")),
        ("Total time", _fmt(_num(stats, "wall_s"), "{:.2f} s")),
        ("Prompt tokens", _prompt_text(stats)),
        ("Answers decoded together", _fmt(_num(stats, "mean_batch"), "{:.1f}")),
    ]
    if stop_reason:
        rows.append(("Why it ended", stop_text(stop_reason)))
    return rows


def _prompt_text(stats: Mapping[str, Any]) -> str:
    """The prompt's tokens, and how many of them were restored from an earlier prompt's."""
    reused = _num(stats, "reused_prompt_tokens")
    text = _fmt(_num(stats, "prompt_tokens"), "{:.0f}")
    return f"{text} ({reused:.0f} reused)" if reused else text


def _row(label: str, value: str) -> str:
    hint = HINTS.get(label)
    title = f' title="{html.escape(hint, quote=True)}"' if hint else ""
    return f"<tr{title}><td>{html.escape(label)}</td><td class='llma-v'>{html.escape(value)}</td></tr>"


def _kind_rows(counts: Mapping[str, int]) -> str:
    """One row per kind of source copied from, its count in that kind's highlight colour."""
    out = []
    for kind in KIND_NAMES:
        if not counts.get(kind):
            continue
        if kind == "blank":  # nothing visible to highlight: said so, in no colour
            label, value = "spaces and line breaks (not highlighted)", str(counts[kind])
        else:
            label = f"from {KIND_NAMES[kind]}"
            value = f"<mark class='llma-src llma-src-{kind}'>{counts[kind]}</mark>"
        out.append(f"<tr class='llma-kind' data-kind='{kind}'><td class='llma-sub'>"
                   f"{html.escape(label)}</td><td class='llma-v'>{value}</td></tr>")
    return "".join(out)


def stats_html(stats: Mapping[str, Any] | None, stop_reason: str | None = None,
               steps: Sequence[Mapping[str, Any]] | None = None) -> str:
    """The statistics table: plain labels (each with a hover explanation), the copied tokens split
    by the kind of source (the highlight colours), and a short glossary."""
    if not stats:
        return '<div class="llma-muted">Ask a question to see its statistics.</div>'
    rows = []
    for label, value in stat_rows(stats, stop_reason):
        rows.append(_row(label, value))
        if label == "Copied tokens":
            rows.append(_kind_rows(copied_by_kind(steps)))
    glossary = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in HINTS.items())
    return (f'<table class="llma-stats" id="llma-stats-table">{"".join(rows)}</table>'
            f'<details class="llma-glossary"><summary>What these numbers mean</summary>'
            f'<dl>{glossary}</dl></details>')


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
    """The forward passes that copied: their number (from 1, counting every pass), the copied
    tokens they accepted and the kind of source (its short name, PLOT_NAMES)."""
    rows = []
    for i, step in enumerate(steps or (), 1):
        step = step if isinstance(step, Mapping) else {}
        accepted = int(step.get("accepted") or 0)
        if accepted:
            kind = step.get("source") if step.get("source") in KIND_NAMES else "other"
            rows.append({"step": i, "accepted": accepted, "source": PLOT_NAMES[kind]})
    frame = pd.DataFrame(rows, columns=STEP_COLUMNS)
    # Fixed dtypes even when empty: the plot picks its axis types from the first value it gets.
    return frame.astype({"step": "int64", "accepted": "int64", "source": "str"})


def plot_colors() -> dict[str, str]:
    """The plot's bar colour for each source name: the highlight colour of that kind."""
    return {PLOT_NAMES[k]: c for k, c in KIND_COLORS.items()}


def plot_limits(frame: pd.DataFrame, passes: int = 0) -> tuple[list[int], list[int]]:
    """Axis ranges from 0 that are long enough for whole-number ticks (Vega picks about 5 ticks
    on this plot's height and 8 on its width, so at least 5 and 10 units); `passes`: how many
    forward passes the answer took (the x axis spans them all)."""
    last = max(passes, int(frame["step"].max()) if len(frame) else 0)
    accepted = int(frame["accepted"].max()) if len(frame) else 0
    return [0, max(10, last + 1)], [0, max(5, accepted)]


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
table.llma-stats td.llma-sub { padding-left: 1.6em !important; opacity: 0.85; }
table.llma-stats mark.llma-src { padding: 0 0.45em; }
.llma-glossary { font-size: 0.82em; margin-top: 0.4em; opacity: 0.85; }
.llma-glossary dt { font-weight: 600; margin-top: 0.3em; } .llma-glossary dd { margin-left: 0.8em; }
.llma-speedup { margin-bottom: 0.4em; }
"""
