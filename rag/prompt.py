"""The chat prompt: instruction, earlier turns, numbered passages and the question, fitted to a budget.

Passages go in the last user message, right before the question, where a small model attends best;
earlier turns stay real chat messages so the model's chat template formats them as it was trained.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from transformers import PreTrainedTokenizerBase

from rag.inputs import PromptTooLongError
from rag.types import Passage

log = logging.getLogger(__name__)

SYSTEM_WITH_PASSAGES = (
    "You answer questions using the numbered passages the user gives. Answer briefly and copy the "
    "exact wording of the passages where it fits. If the passages do not hold the answer, say so."
)
SYSTEM_PLAIN = "You are a helpful assistant. Answer briefly and accurately."
_ROLES = ("user", "assistant")


@dataclass(frozen=True)
class Turn:
    """An earlier message, with its position in the caller's history (for "history:<index>" ids)."""

    index: int
    role: str
    content: str


@dataclass
class Prompt:
    """The rendered prompt and its tokenization; `offsets[i]` is token i's character range in `text`."""

    text: str
    ids: list[int]
    offsets: list[tuple[int, int]]
    passages: list[Passage]
    turns: list[Turn]


def passage_block(number: int, title: str, text: str) -> str:
    return f"[{number}] {title}\n{text}"


def user_content(question: str, passages: Sequence[Passage]) -> str:
    if not passages:
        return question
    blocks = "\n\n".join(passage_block(p.number, p.title, p.text) for p in passages)
    return f"Passages:\n\n{blocks}\n\nQuestion: {question}"


def parse_history(history: Sequence[Mapping[str, object]]) -> list[Turn]:
    """Gradio/OpenAI messages; non-text content (files, images) is skipped, as the model reads text."""
    turns = []
    for i, message in enumerate(history):
        role, content = message.get("role"), message.get("content")
        if role not in _ROLES:
            raise ValueError(f"history message {i} has role {role!r}; expected 'user' or 'assistant'")
        if isinstance(content, str) and content.strip():
            turns.append(Turn(i, str(role), content))
        else:
            log.debug("history message %d has no text content; skipped", i)
    return turns


def render(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]]) -> tuple[str, list[int], list[tuple[int, int]]]:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    # The chat template already wrote the special tokens; tokenizing the text again must not add any.
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return text, list(encoded["input_ids"]), [tuple(o) for o in encoded["offset_mapping"]]


def _messages(question: str, turns: Sequence[Turn], passages: Sequence[Passage], with_index: bool) -> list[dict[str, str]]:
    system = SYSTEM_WITH_PASSAGES if with_index else SYSTEM_PLAIN
    return [{"role": "system", "content": system},
            *({"role": t.role, "content": t.content} for t in turns),
            {"role": "user", "content": user_content(question, passages)}]


def _make(tokenizer: PreTrainedTokenizerBase, question: str, turns: list[Turn], passages: list[Passage], with_index: bool) -> Prompt:
    text, ids, offsets = render(tokenizer, _messages(question, turns, passages, with_index))
    return Prompt(text, ids, offsets, passages, turns)


def _truncate(tokenizer: PreTrainedTokenizerBase, passage: Passage, drop_tokens: int) -> Passage | None:
    ids = tokenizer(passage.text, add_special_tokens=False)["input_ids"]
    keep = len(ids) - drop_tokens
    if keep < 1:
        return None
    # A cut inside a multi-byte character decodes to U+FFFD: drop the partial character.
    text = tokenizer.decode(ids[:keep], clean_up_tokenization_spaces=False).rstrip("\ufffd").rstrip()
    return replace(passage, text=text) if text else None


def build_prompt(
    tokenizer: PreTrainedTokenizerBase,
    question: str,
    turns: list[Turn],
    passages: list[Passage],
    budget: int,
    with_index: bool = True,
) -> Prompt:
    """The prompt with as much context as fits in `budget` tokens.

    Oldest turns go first, then the lowest-ranked passages, then the last passage is truncated.
    Raises ValueError when even the bare question does not fit.
    """
    bare = _make(tokenizer, question, [], [], with_index)
    if len(bare.ids) > budget:
        raise PromptTooLongError(
            f"the question is too long: the prompt needs {len(bare.ids)} tokens but only {budget} fit "
            "(the model's context minus max_new_tokens); shorten the question or lower max_new_tokens")
    kept_turns = list(turns)
    while kept_turns and len(_make(tokenizer, question, kept_turns, [], with_index).ids) > budget:
        kept_turns = kept_turns[1:]
    prompt = _make(tokenizer, question, kept_turns, passages, with_index)
    while len(prompt.ids) > budget and prompt.passages:
        kept = prompt.passages
        if len(kept) > 1:
            kept = kept[:-1]
        else:
            # Overshoot by a few tokens: the passage's tokens merge differently inside the prompt.
            last = _truncate(tokenizer, kept[0], len(prompt.ids) - budget + 4)
            kept = [last] if last else []
        prompt = _make(tokenizer, question, kept_turns, kept, with_index)
    if len(prompt.passages) < len(passages) or len(kept_turns) < len(turns):
        log.info("prompt trimmed to %d passages and %d turns to fit %d tokens",
                 len(prompt.passages), len(kept_turns), budget)
    return prompt
