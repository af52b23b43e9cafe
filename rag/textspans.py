"""From token positions to character positions: the answer decoded as it grows, and copied spans.

Character positions come from decoding token prefixes, so they agree with the text the user sees.
A prefix that ends inside a multi-byte character decodes to a trailing U+FFFD; that partial
character is not counted (and is held back when streaming) until its last byte arrives.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from transformers import PreTrainedTokenizerBase

from llma import CopiedSpan
from rag.references import Reference, decode
from rag.types import TextSpan

PARTIAL = "\ufffd"


class AnswerText:
    """The generated tokens and their decoded text."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.tokenizer = tokenizer
        self.tokens: list[int] = []
        self.text = ""
        self._chars: dict[int, int] = {0: 0}

    def extend(self, ids: Sequence[int]) -> None:
        self.tokens.extend(ids)
        self.text = decode(self.tokenizer, self.tokens)

    @property
    def stable(self) -> str:
        """The text without a trailing character that may still be incomplete."""
        return self.text.rstrip(PARTIAL)

    def char_at(self, n_tokens: int) -> int:
        """Characters decoded from the first `n_tokens` tokens (complete characters only)."""
        if n_tokens not in self._chars:
            self._chars[n_tokens] = len(decode(self.tokenizer, self.tokens[:n_tokens]).rstrip(PARTIAL))
        return self._chars[n_tokens]


def _ref_char(tokenizer: PreTrainedTokenizerBase, ref: Reference, n_tokens: int) -> int:
    return ref.base + len(decode(tokenizer, ref.token_ids[:n_tokens]).rstrip(PARTIAL))


def to_text_span(span: CopiedSpan, answer: AnswerText, ref: Reference) -> TextSpan | None:
    """The character span of a copied token span; None when it is only whitespace, or when the
    characters do not match (possible only at a multi-byte character cut by a token boundary)."""
    start, end = answer.char_at(span.out_start), answer.char_at(span.out_end)
    src_start = _ref_char(answer.tokenizer, ref, span.ref_start)
    src_end = _ref_char(answer.tokenizer, ref, span.ref_end)
    text = answer.text[start:end]
    # Whitespace alone (a copied newline) says nothing about where the answer comes from.
    if not text.strip() or text != ref.source.text[src_start:src_end]:
        return None
    return TextSpan(start, end, ref.source.kind, ref.source.id, src_start, src_end, ref.source.label)


OUTPUT_LABEL = "this answer, earlier words"


def self_span(span: CopiedSpan, answer: AnswerText) -> TextSpan | None:
    """The character span of tokens the answer copied from its own earlier tokens (reference id
    llma.OUTPUT_REF: `ref_start`/`ref_end` are output positions); None as in `to_text_span`."""
    start, end = answer.char_at(span.out_start), answer.char_at(span.out_end)
    src_start, src_end = answer.char_at(span.ref_start), answer.char_at(span.ref_end)
    text = answer.text[start:end]
    if not text.strip() or text != answer.text[src_start:src_end]:
        return None
    return TextSpan(start, end, "output", "output", src_start, src_end, OUTPUT_LABEL)


def add_span(spans: list[TextSpan], span: TextSpan, answer: str, source: str) -> TextSpan:
    """Append `span`, or extend the last span when `span` continues it in the same source.

    Each decoder step adds the model's own token after the copied ones; when that token matches the
    source too, the next copy continues the same run, and the user sees one copied passage.
    Returns the span as stored (the extended one when merged).
    """
    last = spans[-1] if spans else None
    if (last and last.source_id == span.source_id and last.end <= span.start
            and last.source_end <= span.source_start
            and answer[last.end:span.start] == source[last.source_end:span.source_start]):
        spans[-1] = replace(last, end=span.end, source_end=span.source_end)
    else:
        spans.append(span)
    return spans[-1]


def clip_spans(spans: Sequence[TextSpan], length: int) -> list[TextSpan]:
    """The spans cut to an answer truncated to `length` characters (by a stop string)."""
    kept = []
    for span in spans:
        if span.start >= length:
            break
        cut = min(span.end, length)
        kept.append(replace(span, end=cut, source_end=span.source_start + cut - span.start))
    return kept
