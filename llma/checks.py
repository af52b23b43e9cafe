"""Argument checks shared by the engine and its settings: a bad value fails at once, saying what.

Each check raises ValueError naming the argument. Token ids are checked against the model's
vocabulary before they reach it: an id out of range would fail deep inside the embedding on CPU,
and as a device-side assert that kills the process's CUDA context on a GPU.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from llma.types import RefId

# The references of one generation, in tokens, at most (their n-gram index lives in RAM).
MAX_REFERENCE_TOKENS = 262_144


def check_int(name: str, value: object, minimum: int | None = None) -> None:
    """`value` an int (not a bool), at least `minimum` if given."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def check_finite(name: str, value: object) -> None:
    """`value` a finite int or float (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")


def all_ints(values: Sequence[object]) -> bool:
    """Whether every value is exactly an int (not a bool, not a subclass); True for none."""
    return set(map(type, values)) <= {int}


def check_token_ids(name: str, ids: Sequence[int], vocab_size: int) -> None:
    """Every id an int in [0, vocab_size)."""
    # Fast path, in C: it runs on every prompt and reference before the prefill can start; the loop
    # below only names the culprit.
    if all_ints(ids) and (not ids or (min(ids) >= 0 and max(ids) < vocab_size)):
        return
    for i, token in enumerate(ids):
        if not isinstance(token, int) or isinstance(token, bool) or not 0 <= token < vocab_size:
            raise ValueError(f"{name}[{i}] = {token!r} is not a token id of this model "
                             f"(ints in [0, {vocab_size}))")


def check_references(references: object, vocab_size: int, max_tokens: int
                     ) -> Mapping[RefId, Sequence[int]]:
    """`references` checked: a mapping of id -> token ids, in the vocabulary, at most `max_tokens`
    tokens in all. Returns it unchanged ({} for None)."""
    if references is None:
        return {}
    if not isinstance(references, Mapping):
        raise ValueError(f"references must be a mapping of id -> token ids, got {type(references).__name__}")
    total = 0
    for ref_id, ids in references.items():
        if isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence):
            raise ValueError(f"reference {ref_id!r} must be a sequence of token ids, "
                             f"got {type(ids).__name__}")
        total += len(ids)
        if total > max_tokens:
            raise ValueError(f"the references hold more than {max_tokens:,} tokens (LLMAConfig."
                             "max_reference_tokens); pass fewer or shorter references")
        check_token_ids(f"reference {ref_id!r}", ids, vocab_size)
    return references
