"""Test helpers for llma/: mock backends (a scripted one, their common base) and a tiny random-weight Llama."""
from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from llma.backend import Argmax, SingleDraftBackend
from llma.loading import LoadedModel

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


class SequenceBackend(SingleDraftBackend):
    """What the mock backends share: the tokens fed so far (`seq`, its length the cache), the sizes
    of the forwards, the context window, and `trim` (the other Backend members: one draft a step)."""

    name = "mock"

    def __init__(self, context_length: int) -> None:
        self._context_length = context_length
        self.seq: list[int] = []
        self.forward_sizes: list[int] = []

    @property
    def context_length(self) -> int:
        return self._context_length

    @property
    def cached(self) -> int:
        return len(self.seq)

    def trim(self, length: int) -> None:
        assert 0 <= length <= len(self.seq), f"trim to {length} of {len(self.seq)}"
        del self.seq[length:]


class ScriptedBackend(SequenceBackend):
    """A deterministic mock model that "wants" to generate `script` after any prompt.

    The token after `prompt + script[:i]` is `script[i]` (then `eos`); after anything else it is
    `wrong`, so a loop that feeds the model the wrong tokens or trims its cache wrongly diverges.
    """

    def __init__(self, script: Sequence[int], vocab: int = 128, eos: int = 2, wrong: int = 1,
                 context_length: int = 1024) -> None:
        super().__init__(context_length)
        self.script, self.vocab, self.eos, self.wrong = list(script), vocab, eos, wrong
        self.prompt_len = 0

    def _next(self, upto: int) -> int:
        produced = self.seq[self.prompt_len : upto]
        i = len(produced)
        if produced != self.script[:i]:
            return self.wrong
        return self.script[i] if i < len(self.script) else self.eos

    def _logits(self, start: int) -> torch.Tensor:
        rows = [torch.nn.functional.one_hot(torch.tensor(self._next(j + 1)), self.vocab).float()
                for j in range(start, len(self.seq))]
        return torch.stack(rows)

    def prefill(self, ids: Sequence[int]) -> torch.Tensor:
        self.seq, self.prompt_len = list(ids), len(ids)
        self.forward_sizes.append(len(ids))
        return self._logits(len(ids) - 1)

    def forward(self, ids: Sequence[int]) -> torch.Tensor:
        start = len(self.seq)
        self.seq.extend(ids)
        assert len(self.seq) <= self._context_length, "forward past the context window"
        self.forward_sizes.append(len(ids))
        return self._logits(start)


def tiny_llama(vocab: int = 97, context: int = 64, seed: int = 0, init: float = 0.5) -> LoadedModel:
    """A random-weight Llama; a large init spread keeps logits far apart (no near-ties)."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=context,
        initializer_range=init, bos_token_id=0, eos_token_id=None, pad_token_id=None,
    )
    model = LlamaForCausalLM(config).eval()
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return LoadedModel(model=model, tokenizer=None, name="tiny-llama", device=torch.device("cpu"),
                       dtype=torch.float32)


def tiny_llama16(device: str = "cpu", dtype: torch.dtype = torch.float32, context: int = 200) -> LoadedModel:
    """A random-weight Llama with 16-wide heads (Triton's tl.dot needs 16+), logits far apart."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=context,
                         initializer_range=0.5, bos_token_id=0, eos_token_id=None, pad_token_id=None)
    model = LlamaForCausalLM(config).eval().to(device, dtype)
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return LoadedModel(model=model, tokenizer=None, name="tiny-llama-16", device=torch.device(device), dtype=dtype)


class ScriptedRowsBackend(ScriptedBackend):
    """`ScriptedBackend` that verifies several drafts side by side, as llma.static with rows > 1;
    with `caps`, drafts packed into one block (llma.static with a tree): the decoder cuts them so."""

    def __init__(self, script: Sequence[int], rows: int = 3, caps: Sequence[int] | None = None,
                 **kwargs: int) -> None:
        super().__init__(script, **kwargs)
        self.rows = rows
        self.row_counts: list[int] = []
        self.draft_caps = tuple(caps or ())
        self._candidates: list[list[int]] = []
        self.drafts_seen: list[list[list[int]]] = []  # each forward_rows' rows

    drafts_per_step = property(lambda self: self.rows)

    def forward_rows(self, rows: Sequence[Sequence[int]]) -> torch.Tensor:
        assert 1 <= len(rows) <= self.rows
        self.row_counts.append(len(rows))
        self.drafts_seen.append([list(r) for r in rows])
        start, longest = len(self.seq), max(map(len, rows))
        out = torch.zeros(len(rows), longest, self.vocab)
        for i, row in enumerate(rows):
            self.seq[start:] = row
            out[i, : len(row)] = self._logits(start)
        self._candidates, self.seq[start:] = [list(r) for r in rows], [0] * longest
        return out

    def keep(self, row: int, length: int) -> None:
        start = len(self.seq) - max(map(len, self._candidates))
        self.seq[start:] = self._candidates[row]
        self.trim(length)


@dataclass(frozen=True)
class CountedArgmax(Argmax):
    """`Argmax` that notes each read of it in `reads`."""

    reads: list[int] = field(default_factory=list)

    def rows(self) -> list[list[int]]:
        self.reads.append(1)
        return super().rows()


class ScriptedArgmaxBackend(ScriptedRowsBackend):
    """`ScriptedRowsBackend` that also gives only each row's argmax (`forward_argmax`, as llma.static
    does), in one flat tensor as a step's block would hold them; `reads` counts the reads of them."""

    def __init__(self, script: Sequence[int], **kwargs: int) -> None:
        super().__init__(script, **kwargs)
        self.reads: list[int] = []
        self.argmax_calls = 0

    def forward_argmax(self, rows: Sequence[Sequence[int]]) -> Argmax:
        self.argmax_calls += 1
        found = super().forward_argmax(rows)
        return CountedArgmax(found.best, found.index, self.reads)


def exact_twin(model: torch.nn.Module):
    """An HFBackend over an fp64 copy of `model`: the reference for `assert_near_exact`."""
    from llma.backend import HFBackend

    return HFBackend(copy.deepcopy(model).double())


def assert_near_exact(got: torch.Tensor, hf32: torch.Tensor, hf64: torch.Tensor) -> None:
    """`got` is as close to the exact (fp64) logits as the HF model's own fp32 result, within 10x:
    a tolerance from the rounding of the machine the test runs on (these random models with large
    weights amplify it), not a fixed 1e-4. A wrong key, mask or weight is orders above it (a
    one-key mask error moves such logits by 0.7-4.2, test_llma_split_attention)."""
    own = (hf32.double() - hf64).abs().max().item()
    err = (got.double() - hf64).abs().max().item()
    assert err <= 10 * own + 1e-4, f"{err} from the exact logits, HF's own fp32 {own}"
