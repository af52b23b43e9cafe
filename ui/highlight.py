"""Render answers and passages as HTML with the copied regions highlighted.

Every piece of text goes through `html.escape`, so a document or an answer that contains
`<script>` or `<img onerror=...>` is shown as text and never executed. Spans may overlap, touch,
run past the text or be empty: the text is cut at every span boundary and each piece is marked
with the spans that cover it (the first one, by start then order given, picks the color; the
hover title lists all of them).

Answers are Markdown, rendered safely with their marks by `ui.markdown`; the answer HTML is a
single line: the chat renders messages as Markdown, and one line of HTML starting with a block tag
is passed through as raw HTML, so the chat's own Markdown never rewrites it.
"""
from __future__ import annotations

import html
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .markdown import render_marked

# source_kind -> (css class, legend label)
KINDS: dict[str, tuple[str, str]] = {
    "passage": ("llma-src-passage", "retrieved passage"),
    "history": ("llma-src-history", "earlier turn"),
    "cache": ("llma-src-cache", "cached answer"),
    "output": ("llma-src-output", "repeated from this answer"),
}
_OTHER = ("llma-src-other", "other reference")

CSS = """
.llma-answer, .llma-passage-text { white-space: normal; overflow-wrap: anywhere; line-height: 1.55; }
.llma-passage-text { white-space: pre-wrap; font-size: 0.92em; max-height: 14em; overflow-y: auto; }
mark.llma-src { color: inherit; padding: 0 1px; border-radius: 3px; cursor: help; }
mark.llma-src-passage { background: rgba(250, 204, 21, 0.38); border-bottom: 2px solid #d4a106; }
mark.llma-src-history { background: rgba(96, 165, 250, 0.32); border-bottom: 2px solid #3b82f6; }
mark.llma-src-cache { background: rgba(74, 222, 128, 0.32); border-bottom: 2px solid #16a34a; }
mark.llma-src-output { background: rgba(244, 114, 182, 0.30); border-bottom: 2px solid #db2777; }
mark.llma-src-other { background: rgba(192, 132, 252, 0.32); border-bottom: 2px solid #9333ea; }
.llma-legend { display: flex; gap: 0.9em; flex-wrap: wrap; align-items: center; font-size: 0.9em; }
.llma-legend mark { padding: 0 0.4em; }
.llma-msg-stats { margin-top: 0.5em; font-size: 0.8em; opacity: 0.75; }
.llma-answer p { margin: 0 0 0.5em 0; } .llma-answer p:last-child { margin-bottom: 0; }
.llma-answer pre { white-space: pre-wrap; }
.llma-notice, .llma-answer-notice { font-size: 0.9em; padding: 0.3em 0.6em; border-radius: 6px;
               background: rgba(96, 165, 250, 0.15); }
.llma-msg-note { margin-top: 0.4em; font-size: 0.85em; font-style: italic; opacity: 0.8; }
.llma-waiting { display: flex; align-items: center; gap: 0.5em; opacity: 0.8; }
.llma-spinner { display: inline-block; width: 1em; height: 1em; border-radius: 50%;
                border: 2px solid currentColor; border-right-color: transparent;
                animation: llma-spin 0.8s linear infinite; }
.llma-waiting::after { content: "Finding passages and reading the prompt…"; }
@keyframes llma-spin { to { transform: rotate(360deg); } }
.llma-passage { border: 1px solid var(--border-color-primary, #ddd); border-radius: 8px;
                padding: 0.5em 0.7em; margin-bottom: 0.6em; }
.llma-passage-head { display: flex; justify-content: space-between; gap: 0.5em;
                     font-size: 0.88em; margin-bottom: 0.3em; }
.llma-passage-head .llma-score { font-variant-numeric: tabular-nums; opacity: 0.8; white-space: nowrap; }
.llma-muted { opacity: 0.7; font-size: 0.9em; }
"""


def _get(obj: Any, name: str, default: Any = None) -> Any:
    """Attribute or dict key (spans and passages may arrive as dataclasses or dicts)."""
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def kind_class(kind: str | None) -> str:
    return KINDS.get(kind or "", _OTHER)[0]


def span_label(span: Any) -> str:
    label = _get(span, "label") or _get(span, "source_id") or _get(span, "source_kind") or "reference"
    return f"copied from {label}"


def _segments(length: int, ranges: Sequence[tuple[int, int, Any]]) -> list[tuple[int, int, list[Any]]]:
    """Cut [0, length) at every range boundary; each piece lists the ranges covering it, in order."""
    clipped = []
    for order, (start, end, item) in enumerate(ranges):
        try:
            start, end = max(0, int(start)), min(length, int(end))
        except (TypeError, ValueError):
            continue
        if start < end:
            clipped.append((start, end, order, item))
    cuts = sorted({0, length, *(s for s, _, _, _ in clipped), *(e for _, e, _, _ in clipped)})
    clipped.sort(key=lambda r: (r[0], r[2]))
    out = []
    for a, b in zip(cuts, cuts[1:]):
        covering = [item for s, e, _, item in clipped if s <= a and b <= e]
        out.append((a, b, covering))
    return out


def _escape(text: str, newlines: str) -> str:
    escaped = html.escape(text, quote=True)
    return escaped.replace("\n", newlines) if newlines != "\n" else escaped


def _mark_tag(covering: list[Any]) -> str:
    titles = list(dict.fromkeys(span_label(s).replace("\n", " ") for s in covering))
    cls = kind_class(_get(covering[0], "source_kind"))
    return f'<mark class="llma-src {cls}" title="{html.escape("; ".join(titles), quote=True)}">'


def highlight(text: str, ranges: Sequence[tuple[int, int, Any]], *, newlines: str = "<br>") -> str:
    """Escaped `text` with each covered piece wrapped in <mark class=... title=...>.

    `ranges` are (start, end, span) with char offsets into `text`; the span's `source_kind`
    picks the color and its label the hover title.
    """
    text = text or ""
    parts = []
    for a, b, covering in _segments(len(text), ranges):
        piece = _escape(text[a:b], newlines)
        if not covering or (text[a:b].isspace() and "\n" in text[a:b]):  # no empty marks on blank lines
            parts.append(piece)
            continue
        parts.append(f'{_mark_tag(covering)}{piece}</mark>')
    return "".join(parts)


def answer_ranges(spans: Iterable[Any]) -> list[tuple[int, int, Any]]:
    return [(_get(s, "start", 0), _get(s, "end", 0), s) for s in spans or ()]


def render_answer(text: str, spans: Iterable[Any] = (), footer: str = "", note: str = "") -> str:
    """One line of HTML for a chat message: the answer's Markdown with its copied pieces marked,
    then an optional note ("Stopped.") and footer (statistics), both plain text, escaped."""
    text = text or ""
    pieces = [(a, b, covering) for a, b, covering in _segments(len(text), answer_ranges(spans))
              if covering]
    body = render_marked(text, pieces, _mark_tag)
    extra = "".join(f'<div class="{cls}">{html.escape(value)}</div>'
                    for cls, value in (("llma-msg-note", note), ("llma-msg-stats", footer)) if value)
    return f'<div class="llma-answer">{body}</div>{extra}'


def render_waiting() -> str:
    """The assistant's message until the first token arrives: a spinner. Its words come from the
    CSS, so the message has no text yet (a client reading the chat sees an empty answer)."""
    return ('<div class="llma-answer llma-waiting"><span class="llma-spinner" role="status" '
            'aria-label="waiting for the first token"></span></div>')


def render_user(text: str) -> str:
    """The user's own message, escaped (it is shown through the same Markdown renderer)."""
    return f'<div class="llma-answer">{_escape(text or "", "<br>")}</div>'


def legend_html() -> str:
    chips = "".join(
        f'<span><mark class="llma-src {cls}">{html.escape(label)}</mark></span>'
        for cls, label in KINDS.values())
    return f'<div class="llma-legend"><span>Copied &amp; verified text:</span>{chips}</div>'


def passage_ranges(passage: Any, spans: Iterable[Any]) -> list[tuple[int, int, Any]]:
    """The parts of `passage` that the answer copied (spans whose source is this passage)."""
    pid = _get(passage, "id")
    return [(_get(s, "source_start", 0), _get(s, "source_end", 0), s) for s in spans or ()
            if _get(s, "source_kind") == "passage" and _get(s, "source_id") == pid]


_KEEP_LINE = re.compile(r"\n(?=[ \t\n>*+\-|#]|\.\.\.|\d+\.)|(?<=\n)\n")


def reflow(text: str) -> str:
    """Hard-wrapped prose joined into paragraphs, one character for one (offsets stay valid):
    a lone line break becomes a space unless the next line looks like code, a list or a table."""
    return "".join(" " if c == "\n" and not _KEEP_LINE.match(text, i) and text[i - 1:i] != "\n"
                   else c for i, c in enumerate(text))


def _card(number: str, title: str, source: str, meta: str, body: str) -> str:
    return (f'<div class="llma-passage"><div class="llma-passage-head">'
            f'<span><strong>{html.escape(number)}</strong> {html.escape(title)}'
            f' <span class="llma-muted">{html.escape(source)}</span></span>'
            f'<span class="llma-score">{html.escape(meta)}</span></div>'
            f'<div class="llma-passage-text">{body}</div></div>')


def _copied_chars(text: str, ranges: Sequence[tuple[int, int, Any]]) -> int:
    covered = set()
    for s, e, _ in ranges:
        covered.update(range(max(0, int(s)), min(len(text), int(e))))
    return len(covered)


def render_sources(passages: Sequence[Any], spans: Iterable[Any] = (),
                   sources: Mapping[str, Any] | None = None) -> str:
    """The retrieved passages with scores, the copied regions marked inside them; then any other
    source (earlier turn, cached answer) the answer copied from, if `sources` has its text."""
    spans = list(spans or ())
    cards = []
    for i, p in enumerate(passages or (), 1):
        number = _get(p, "number", i)
        text = _get(p, "text") or ""
        score = _get(p, "score")
        ranges = passage_ranges(p, spans)
        copied = _copied_chars(text, ranges)
        meta = " · ".join(x for x in (
            f"score {float(score):.3f}" if isinstance(score, (int, float)) else "",
            f"{copied} chars copied" if copied else "") if x)
        cards.append(_card(f"[{number}]", str(_get(p, "title") or _get(p, "source") or "passage"),
                           str(_get(p, "source") or ""), meta, highlight(reflow(text), ranges, newlines="\n")))
    for sid, src in (sources or {}).items():
        kind = _get(src, "kind")
        if kind == "passage":
            continue
        ranges = [(_get(s, "source_start", 0), _get(s, "source_end", 0), s) for s in spans
                  if _get(s, "source_id") == sid]
        if not ranges:
            continue
        text = _get(src, "text") or ""
        label = KINDS.get(kind or "", _OTHER)[1]
        cards.append(_card("↺", str(_get(src, "label") or sid), label,
                           f"{_copied_chars(text, ranges)} chars copied",
                           highlight(reflow(text), ranges, newlines="\n")))
    if not cards:
        return '<div class="llma-muted">No passages retrieved yet.</div>'
    return "".join(cards)
