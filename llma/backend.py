"""Model backends: the decoder loop sees a model only through the `Backend` protocol.

A backend holds the KV cache of one sequence. `prefill` runs the prompt, `forward` runs a few more
tokens on top of the cache and returns one row of logits per token, `trim` rolls the cache back
(the rejected draft tokens). A backend that verifies several drafts per step (`drafts_per_step`
> 1) runs them with `forward_rows` and keeps one with `keep`; `forward_argmax` gives only each
row's argmax (the greedy and forced verifiers read nothing else). `SingleDraftBackend` gives a
backend of one draft per step all of these, so the decoder and engine never probe for members.
"""
from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from transformers import DynamicCache, PreTrainedModel

log = logging.getLogger(__name__)

# Prompts are run padded to a multiple of this many tokens, so a server sees at most
# context / PREFILL_PAD prefill shapes (each new shape can keep host memory for good on CUDA).
PREFILL_PAD = 64


def padded_length(n: int, limit: int) -> int:
    """`n` rounded up to a multiple of PREFILL_PAD, but not past `limit` (and never below `n`)."""
    return max(n, min(-(-n // PREFILL_PAD) * PREFILL_PAD, limit))


class Backend(Protocol):
    """What the decoder and the engine use of a model (one sequence's KV cache behind it)."""

    @property
    def name(self) -> str: ...

    @property
    def context_length(self) -> int: ...

    @property
    def cached(self) -> int:
        """Number of tokens whose keys and values are in the cache."""
        ...

    @property
    def max_draft(self) -> int | None:
        """The longest draft one step verifies beside the last token (None: no limit)."""
        ...

    @property
    def drafts_per_step(self) -> int:
        """Drafts one step can verify (1: `forward`; more: `forward_rows` then `keep`)."""
        ...

    @property
    def draft_caps(self) -> tuple[int, ...]:
        """Drafts packed into one block: each one's longest length, in order (() where not packed)."""
        ...

    @property
    def needs_warm_up(self) -> bool:
        """Whether the first steps set the backend up (CUDA graph captures, torch.compile)."""
        ...

    def reserve(self, new_tokens: int) -> None:
        """Tokens the next generation may add after its prompt (a static cache sizes for them)."""
        ...

    def prefill(self, ids: Sequence[int]) -> torch.Tensor:
        """Start a new sequence with `ids`; return the last position's logits, shape [1, vocab]."""
        ...

    def forward(self, ids: Sequence[int]) -> torch.Tensor:
        """Append `ids` to the cached sequence; return their logits, shape [len(ids), vocab]."""
        ...

    def forward_rows(self, rows: Sequence[Sequence[int]]) -> torch.Tensor:
        """Up to `drafts_per_step` rows [last token, *draft], each appended after the cache as if
        alone, in one step: logits [len(rows), longest, vocab]. Follow with `keep`."""
        ...

    def forward_argmax(self, rows: Sequence[Sequence[int]]) -> Argmax:
        """`forward` of one row (follow with `trim`) or `forward_rows` of several (follow with
        `keep`), giving each row's argmax instead of its logits."""
        ...

    def keep(self, row: int, length: int) -> None:
        """After `forward_rows`: the sequence goes on with `row`'s tokens, up to `length` in all."""
        ...

    def trim(self, length: int) -> None:
        """Keep only the first `length` cached tokens."""
        ...


@dataclass(frozen=True)
class Argmax:
    """Each logit row's argmax, made on the device by the step itself (a backend's `forward_argmax`).

    Why: a greedy verifier needs only these ids, so one small transfer replaces gathering, converting
    and reducing [rows, vocab] logits after the step; and a verifier that reads nothing (forced
    decoding) never calls `rows`, so the host never waits for the device. Read it before the
    backend's next step, which may overwrite `best`."""

    best: torch.Tensor  # [block rows] on the device
    index: tuple[tuple[int, ...], ...]  # per candidate: the block rows of its logits, in order

    def rows(self) -> list[list[int]]:
        """[candidate][row]: the argmax after each candidate's tokens so far (one device read)."""
        flat = self.best.tolist()
        return [[flat[i] for i in rows] for rows in self.index]


def context_length_of(model: PreTrainedModel) -> int:
    """The model's context window (Llama-style configs call it max_position_embeddings; a multimodal
    model's is its text decoder's)."""
    for config in (model.config, model.config.get_text_config()):
        for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
            value = getattr(config, name, None)
            if isinstance(value, int) and value > 0:
                return value
    raise ValueError(f"cannot tell the context length of {type(model).__name__}: set it in its config")


class SingleDraftBackend:
    """The Backend members of a backend that verifies one draft of any length per step; a subclass
    gives `context_length`, `cached`, `prefill`, `forward` and `trim`."""

    name = "single-draft"
    max_draft: int | None = None
    drafts_per_step = 1
    draft_caps: tuple[int, ...] = ()
    needs_warm_up = False

    def reserve(self, new_tokens: int) -> None:
        """Nothing to size: the cache grows as needed."""

    def forward_rows(self, rows: Sequence[Sequence[int]]) -> torch.Tensor:
        if len(rows) != 1:
            raise ValueError(f"{type(self).__name__} verifies one draft per step, got {len(rows)}")
        return self.forward(rows[0])[None]

    def keep(self, row: int, length: int) -> None:
        if row != 0:
            raise ValueError(f"{type(self).__name__} verifies one draft per step: keep row 0, got {row}")
        self.trim(length)

    def forward_argmax(self, rows: Sequence[Sequence[int]]) -> Argmax:
        logits = self.forward_rows(rows) if len(rows) > 1 else self.forward(rows[0])[None]
        width = logits.shape[1]
        index = tuple(tuple(range(c * width, c * width + len(r))) for c, r in enumerate(rows))
        return Argmax(logits.argmax(-1).flatten(), index)


class HFBackend(SingleDraftBackend):
    """Any Hugging Face causal LM with a `DynamicCache`; runs on the model's device."""

    name = "hf"

    def __init__(self, model: PreTrainedModel) -> None:
        self.model = model
        self.device = model.device
        self._context_length = context_length_of(model)
        self._cache: DynamicCache | None = None
        # Older transformers call it num_logits_to_keep; without either, prefill returns every row.
        params = inspect.signature(model.forward).parameters
        self._keep_arg = next((n for n in ("logits_to_keep", "num_logits_to_keep") if n in params), None)

    @property
    def context_length(self) -> int:
        return self._context_length

    @property
    def cached(self) -> int:
        return self._cache.get_seq_length() if self._cache is not None else 0

    @torch.inference_mode()
    def prefill(self, ids: Sequence[int]) -> torch.Tensor:
        """Runs the prompt right-padded to `padded_length`: causal attention keeps the padding out
        of the real rows, and it leaves the cache at once."""
        self._cache = DynamicCache()
        n = len(ids)
        pad = padded_length(n, self._context_length) - n
        extra = {self._keep_arg: pad + 1} if self._keep_arg else {}  # the last real row and the padding's
        rows = self._run([*ids, *[0] * pad], **extra)
        self.trim(n)
        return rows[len(rows) - pad - 1 : len(rows) - pad]

    @torch.inference_mode()
    def forward(self, ids: Sequence[int]) -> torch.Tensor:
        if self._cache is None:
            raise RuntimeError("forward() before prefill()")
        return self._run(ids)

    def _run(self, ids: Sequence[int], **extra: int) -> torch.Tensor:
        input_ids = torch.tensor([list(ids)], dtype=torch.long, device=self.device)
        out = self.model(input_ids=input_ids, past_key_values=self._cache, use_cache=True, **extra)
        self._cache = out.past_key_values
        return out.logits[0].float()

    def trim(self, length: int) -> None:
        remove = self.cached - length
        if remove < 0:
            raise ValueError(f"cannot trim a cache of {self.cached} tokens to {length}")
        # A negative count removes that many tokens in every transformers version; a positive one
        # meant "keep this many" in older versions and is refused by newer ones.
        if remove and self._cache is not None:
            self._cache.crop(-remove)
