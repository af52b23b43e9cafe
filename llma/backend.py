"""Model backends: the decoder loop sees a model only through this small interface.

A backend holds the KV cache of one sequence. `prefill` runs the prompt, `forward` runs a few more
tokens on top of the cache and returns one row of logits per token, `trim` rolls the cache back
(the rejected draft tokens). Mock models in the tests implement the same interface. A backend may
also offer `forward_rows` and `keep` (several drafts a step) and `forward_argmax` (llma.static: the
argmax of each row, made on the device, for verifiers that read nothing else).
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
# context / PREFILL_PAD prefill shapes: on CUDA every new prefill shape kept ~0.75 MB of host memory
# for good (benchmarks/reliability/engine_cuda_before_fix.md).
PREFILL_PAD = 64


def padded_length(n: int, limit: int) -> int:
    """`n` rounded up to a multiple of PREFILL_PAD, but not past `limit` (and never below `n`)."""
    return max(n, min(-(-n // PREFILL_PAD) * PREFILL_PAD, limit))


class Backend(Protocol):
    @property
    def context_length(self) -> int: ...

    @property
    def cached(self) -> int:
        """Number of tokens whose keys and values are in the cache."""
        ...

    def prefill(self, ids: Sequence[int]) -> torch.Tensor:
        """Start a new sequence with `ids`; return the last position's logits, shape [1, vocab]."""
        ...

    def forward(self, ids: Sequence[int]) -> torch.Tensor:
        """Append `ids` to the cached sequence; return their logits, shape [len(ids), vocab]."""
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
    """The model's context window (Llama-style configs call it max_position_embeddings)."""
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(model.config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    raise ValueError(f"cannot tell the context length of {type(model).__name__}: set it in its config")


class HFBackend:
    """Any Hugging Face causal LM with a `DynamicCache`; runs on the model's device."""

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
