"""Plain-text rendering of an answer with its copied spans marked, for terminals and logs."""
from __future__ import annotations

from rag.types import Answer

_COLORS = ("\033[36m", "\033[33m", "\033[32m", "\033[35m", "\033[34m", "\033[31m")
_RESET = "\033[0m"


def source_keys(answer: Answer) -> dict[str, int]:
    """A short number per source that the answer copies from, in order of first use."""
    keys: dict[str, int] = {}
    for span in answer.spans:
        keys.setdefault(span.source_id, len(keys) + 1)
    return keys


def marked_text(answer: Answer, color: bool) -> str:
    """The answer with each copied span colored by source, or written `[[text]]{n}` without color."""
    keys = source_keys(answer)
    out, pos = [], 0
    for span in answer.spans:
        out.append(answer.text[pos:span.start])
        piece, key = answer.text[span.start:span.end], keys[span.source_id]
        out.append(f"{_COLORS[(key - 1) % len(_COLORS)]}{piece}{_RESET}" if color else f"[[{piece}]]{{{key}}}")
        pos = span.end
    out.append(answer.text[pos:])
    return "".join(out)


def legend(answer: Answer, color: bool) -> list[str]:
    """One line per source copied from, then the retrieved passages that were not copied from."""
    keys = source_keys(answer)
    labels = {s.source_id: s.label for s in answer.spans}
    where = {p.id: f" ({p.source}, score {p.score:.2f})" for p in answer.passages}
    lines = []
    for source_id, key in keys.items():
        tag = f"{_COLORS[(key - 1) % len(_COLORS)]}{{{key}}}{_RESET}" if color else f"{{{key}}}"
        lines.append(f"{tag} {labels[source_id]}{where.get(source_id, '')}")
    lines += [f"    {p.label}{where[p.id]}" for p in answer.passages if p.id not in keys]
    return lines


def stats_line(answer: Answer) -> str:
    s = answer.stats
    return (f"{s['tokens']} tokens in {s['forward_passes']} forward passes "
            f"({float(s['tokens_per_forward']):.2f} tokens/forward), "
            f"{float(s['copied_share']):.0%} copied, acceptance {float(s['acceptance_rate']):.0%}, "
            f"{float(s['tokens_per_s']):.1f} tokens/s, {float(s['wall_s']):.2f} s, "
            f"prompt {s['prompt_tokens']} tokens, stop: {answer.stop_reason}")
