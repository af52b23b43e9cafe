"""Token ids of the texts the decoder may copy from, with a way back to their characters.

A reference's tokens are best taken from the prompt's own tokenization: tokenized alone, a passage
splits differently at its edges ("\\nThe" vs "The"), and LLMA only proposes token runs the model
then reproduces exactly. Texts not in the prompt (cached answers) are tokenized alone.
"""
from __future__ import annotations

import logging
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from rag.types import SourceText

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reference:
    """`decode(token_ids)` equals `source.text[base : base + len(decode(token_ids))]`."""

    source: SourceText
    token_ids: tuple[int, ...]
    base: int


@dataclass(frozen=True)
class TokenizedText:
    """A text with its token ids and each token's character range in the text."""

    text: str
    ids: Sequence[int]
    offsets: Sequence[tuple[int, int]]


def decode(tokenizer: PreTrainedTokenizerBase, ids: Sequence[int]) -> str:
    # No clean-up: it rewrites spaces, and character offsets must match the tokens exactly.
    return tokenizer.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False)


def _checked(tokenizer: PreTrainedTokenizerBase, source: SourceText, ids: Sequence[int], base: int) -> Reference | None:
    decoded = decode(tokenizer, ids)
    if not decoded or source.text[base : base + len(decoded)] != decoded:
        return None
    return Reference(source, tuple(ids), base)


def from_prompt(tokenizer: PreTrainedTokenizerBase, prompt: TokenizedText, source: SourceText, at: int) -> Reference | None:
    """The prompt tokens lying wholly inside `source.text`, found in the prompt at character `at`."""
    end = at + len(source.text)
    first = bisect_left([a for a, _ in prompt.offsets], at)
    last = bisect_right([b for _, b in prompt.offsets], end)
    if first >= last:
        return None
    return _checked(tokenizer, source, prompt.ids[first:last], prompt.offsets[first][0] - at)


def alone(tokenizer: PreTrainedTokenizerBase, source: SourceText) -> Reference | None:
    ids = tokenizer(source.text, add_special_tokens=False)["input_ids"]
    return _checked(tokenizer, source, ids, 0)


def build_references(
    tokenizer: PreTrainedTokenizerBase, prompt: TokenizedText, sources: Sequence[SourceText], from_prompt_tokens: bool
) -> dict[str, Reference]:
    """One reference per source with text. Sources are searched in the prompt in order (so a
    repeated text maps to its own place), falling back to the whole prompt, then to tokenizing alone."""
    refs: dict[str, Reference] = {}
    pos = 0
    for source in sources:
        if not source.text.strip():
            continue
        ref = None
        if from_prompt_tokens:
            at = prompt.text.find(source.text, pos)
            at = at if at >= 0 else prompt.text.find(source.text)
            if at >= 0:
                ref = from_prompt(tokenizer, prompt, source, at)
                pos = at + len(source.text) if ref else pos
        ref = ref or alone(tokenizer, source)
        if ref is None:
            log.warning("reference %s does not round-trip through the tokenizer; not used", source.id)
            continue
        refs[source.id] = ref
    return refs
