"""Checks on what callers hand the pipeline: questions, chat history, ready-made messages.

Each bad value raises ValueError saying what is wrong, before any retrieval or decoding starts.
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence

# A bound on characters, checked before tokenizing (tokenizing megabytes takes seconds); the exact
# bound, in tokens, is the model's context minus max_new_tokens, checked when the prompt is built.
MAX_QUESTION_CHARS = 32_000
_KEPT_CONTROLS = "\t\n"
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")  # terminal colour/cursor codes (CSI)
# Reference text bigger than this many characters per allowed token cannot fit the token limit for
# any usual tokenizer; refusing it before tokenizing saves seconds per megabyte.
MAX_CHARS_PER_TOKEN = 16
_ROLES = ("system", "user", "assistant")


class PromptTooLongError(ValueError):
    """The prompt does not fit: the model's context minus max_new_tokens, or a caller's own limit."""


def clean_text(text: str) -> str:
    """`text` without control characters (tab and newline stay; CR-LF becomes LF) and with lone
    surrogates replaced by U+FFFD: the tokenizer refuses those, and terminal escapes or NULs pasted
    into a question only disturb retrieval."""
    text = _ANSI_ESCAPE.sub("", text.replace("\r\n", "\n"))
    return "".join("\ufffd" if unicodedata.category(c) == "Cs" else c for c in text
                   if c in _KEPT_CONTROLS or unicodedata.category(c) != "Cc")


def check_question(question: object, max_chars: int = MAX_QUESTION_CHARS) -> str:
    """The cleaned, stripped question; ValueError when it is not text, empty, or too long."""
    if not isinstance(question, str):
        raise ValueError(f"the question must be text (str), got {type(question).__name__}")
    if len(question) > max_chars:
        raise ValueError(f"the question is too long ({len(question):,} characters; the limit is "
                         f"{max_chars:,}); shorten it, or index the text as a document and ask about it")
    question = clean_text(question).strip()
    if not question:
        raise ValueError("the question is empty: type a question")
    return question


def check_history(history: object) -> list[dict[str, object]]:
    """A list of {"role", "content"} messages (Gradio/OpenAI style), text content cleaned; roles are
    checked when the prompt is built."""
    if isinstance(history, (str, bytes, Mapping)) or not isinstance(history, Sequence):
        raise ValueError(f"history must be a list of {{'role', 'content'}} messages, got {type(history).__name__}")
    for i, message in enumerate(history):
        if not isinstance(message, Mapping):
            raise ValueError(f"history message {i} must be a mapping with 'role' and 'content', "
                             f"got {type(message).__name__}")
    return [{**m, "content": clean_text(c)} if isinstance(c := m.get("content"), str) else dict(m)
            for m in history]


def check_session(session: object) -> str | None:
    """None (no session: nothing is cached) or the session key, a non-empty string."""
    if session is None:
        return None
    if not isinstance(session, str) or not session.strip():
        raise ValueError(f"session must be None or a non-empty string, got {session!r}")
    return session


def check_messages(messages: object) -> list[dict[str, str]]:
    """Chat messages for the chat template: system/user/assistant roles, text content (cleaned)."""
    if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Sequence) or not messages:
        raise ValueError("no messages to answer: pass a non-empty list of {'role', 'content'} messages")
    checked = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise ValueError(f"message {i} must be a mapping with 'role' and 'content'")
        role, content = message.get("role"), message.get("content")
        if role not in _ROLES:
            raise ValueError(f"message {i} has role {role!r}; expected one of {_ROLES}")
        if not isinstance(content, str):
            raise ValueError(f"message {i} has no text content (got {type(content).__name__})")
        checked.append({"role": str(role), "content": clean_text(content)})
    if not any(m["content"].strip() for m in checked):
        raise ValueError("the messages hold no text to answer")
    return checked


def check_reference_texts(references: object, max_tokens: int) -> list[str]:
    """A list of texts, not so long that they cannot fit `max_tokens` (checked before tokenizing)."""
    if isinstance(references, (str, bytes)) or not isinstance(references, Sequence) or \
            not all(isinstance(r, str) for r in references):
        raise ValueError("references must be a list of texts")
    chars = sum(len(r) for r in references)
    if chars > max_tokens * MAX_CHARS_PER_TOKEN:
        raise ValueError(f"the references hold {chars:,} characters, far more than the limit of "
                         f"{max_tokens:,} tokens (LLMAConfig.max_reference_tokens); pass fewer or shorter ones")
    return [clean_text(r) for r in references]
