"""An answer's Markdown (code fences, lists, emphasis) as safe HTML, with copied regions marked.

The model writes Markdown, and the highlights are character ranges of that Markdown source. Each
highlighted piece is bracketed by private-use sentinel characters, the text is rendered by
markdown-it with raw HTML, links and images turned off (so markup in an answer stays text and no
page loads anything), and the sentinels become `<mark>` tags. A piece never crosses a line, and its
sentinels go after a line's block markers (`- `, `1. `, `# `, `> `) and never on a code fence
line, so they do not change how the Markdown parses.

The result is one line (newlines become `&#10;`, which a browser still honours inside `<pre>`):
the chat passes one line of HTML that starts with a block tag through as raw HTML.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from markdown_it import MarkdownIt

OPEN, CLOSE = "\ue000", "\ue001"
_INDEX_BASE = 0xF0000  # sentinel OPEN is followed by chr(_INDEX_BASE + i): the i-th piece's tag
_PRIVATE = re.compile("[\ue000\ue001\U000f0000-\U000fffff]")
_BLOCK_MARKERS = re.compile(r"[ \t]*(?:(?:[-*+]|\d{1,9}[.)])[ \t]+|#{1,6}[ \t]+|>[ \t]?)*")
_FENCE = re.compile(r"[ \t]*(```|~~~)")
_PLACED = re.compile(f"{OPEN}([\U000f0000-\U000fffff])|{CLOSE}")

_MD = MarkdownIt("commonmark", {"html": False, "breaks": True}).disable(
    ["image", "link", "autolink", "reference", "html_inline", "html_block"])


def _line_start(text: str, i: int) -> int:
    return text.rfind("\n", 0, i) + 1


def _content(text: str, a: int, b: int) -> tuple[int, int] | None:
    """The part of text[a:b] (one line's piece) that a mark may cover without changing the parse."""
    start = _line_start(text, a)
    line_end = text.find("\n", start)
    line = text[start:line_end if line_end >= 0 else len(text)]
    if _FENCE.match(line):
        return None
    if not text[start:a].strip():  # the piece starts the line: step over its block markers
        a = max(a, start + _BLOCK_MARKERS.match(line).end())
    while a < b and text[a].isspace():
        a += 1
    while b > a and text[b - 1].isspace():
        b -= 1
    return (a, b) if a < b else None


def render_marked(text: str, pieces: Sequence[tuple[int, int, Any]], tag: Callable[[Any], str]) -> str:
    """HTML of Markdown `text` with every (start, end, item) piece (sorted, non-overlapping)
    wrapped in `tag(item)` ... `</mark>`; `tag` must return a complete, escaped opening tag."""
    text = _PRIVATE.sub("\ufffd", text or "")
    inserts: list[tuple[int, str]] = []
    tags: list[str] = []
    for a, b, item in pieces:
        pos = a
        while pos < b:  # one mark per line
            nl = text.find("\n", pos, b)
            end = b if nl < 0 else nl
            bounds = _content(text, pos, end)
            if bounds:
                inserts += [(bounds[0], OPEN + chr(_INDEX_BASE + len(tags))), (bounds[1], CLOSE)]
                tags.append(tag(item))
            pos = end + 1
    out, last = [], 0
    for pos, mark in sorted(inserts, key=lambda x: x[0]):  # stable: a close before a later open
        out.append(text[last:pos])
        out.append(mark)
        last = pos
    out.append(text[last:])
    rendered = _MD.render("".join(out))

    def place(m: re.Match) -> str:
        if m.group(0) == CLOSE:
            return "</mark>"
        index = ord(m.group(1)) - _INDEX_BASE
        return tags[index] if index < len(tags) else ""

    rendered = _PLACED.sub(place, rendered)
    rendered = _PRIVATE.sub("", rendered)  # a sentinel split off its index (never expected)
    return rendered.strip().replace("\n", "&#10;")
