"""The answer's notice (rag.Answer.notice: e.g. that no passage was relevant enough to be given to
the model), shown above the sources."""
from __future__ import annotations

import html


def notice_html(notice: str | None) -> str:
    """An escaped, visible note; empty when there is nothing to say."""
    if not notice:
        return ""
    return (f'<div class="llma-answer-notice" id="llma-answer-notice" style="margin-bottom:.5em">'
            f'ℹ️ {html.escape(notice)}</div>')
