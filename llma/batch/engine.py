"""`BatchEngine`: the `Engine` API (stream / generate) for many callers at once, decoded together.

Thread-safe: any number of threads may stream at once; their requests share the scheduler's
steps (llma.batch.scheduler). Each request's output is the one it gets decoded alone by this
engine with the same settings.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence

from llma.batch.budget import TIERS, CostModel, RowBudget
from llma.batch.prefix import PrefixStore
from llma.batch.runner import MAX_ROWS, PREFILL_CHUNK, BatchRunner
from llma.batch.scheduler import Scheduler, SchedulerStats
from llma.checks import check_references, check_token_ids
from llma.cpu.weights import int4_reason
from llma.decoder import collect
from llma.engine import (OUTPUT_REF, DraftDefaults, Engine, LLMAConfig, build_proposer, build_verifier,
                         eos_token_ids, fixed_block_defaults)
from llma.history import AnswerHistory
from llma.loading import LoadedModel
from llma.options import EngineOptions
from llma.sequence import DecodeState, StopConfig
from llma.static.family import unsupported_reason
from llma.threads import in_own_thread
from llma.types import DecodeResult, RefId, StepEvent
from llma.verifier import Verifier

log = logging.getLogger(__name__)

__all__ = ["BatchEngine", "OUTPUT_REF", "open_engine"]


class BatchEngine:
    """A model decoding up to `slots` requests at a time with continuous batching.

    `cost`: the step's cost by row count, which sets how many drafted rows each request gets as the
    batch grows (default: measured now, a few seconds). `max_len` caps the context (each slot holds
    one). `weights`: "full" or "int4", `glue`: int4's elementwise work in C, `prompt_dtype`: int4's
    prompt products' dtype (None: this CPU's default) (BatchRunner). `fixed`:
    decoding steps in fixed shapes, CUDA graphs on CUDA (default there; see BatchRunner). `overlap`:
    the running requests step in two groups in turn, one group's verdicts and next drafts made while
    the other's step runs (llma.batch.scheduler; outputs unchanged). `prefix_mb`: MiB of stored
    prompt chunks that later prompts starting with them reuse (llma.batch.prefix; outputs unchanged;
    0 or where `BatchRunner.reuses_prefixes` is False: none). Raises ValueError for a model family
    outside the static arithmetic (llma.static.family).
    """

    concurrent = True  # callers may stream from many threads at once

    def __init__(self, loaded: LoadedModel, slots: int = 8, max_len: int | None = None,
                 cost: CostModel | None = None, weights: str = "full", fixed: bool | None = None,
                 glue: bool = False, overlap: bool = False, prompt_dtype: str | None = None,
                 prefix_mb: int = 0) -> None:
        self.loaded = loaded
        # Built and measured in a thread that ends: the loop thread alone keeps a CPU thread team.
        self.runner, cost = in_own_thread(_build, loaded, slots, max_len, weights, fixed, cost, glue,
                                          prompt_dtype)
        prefixes = None
        if prefix_mb > 0 and self.runner.reuses_prefixes:
            prefixes = PrefixStore(self.runner.cache, PREFILL_CHUNK, prefix_mb << 20)
        elif prefix_mb > 0:
            log.info("prompt chunks are not reused here: their bits could depend on the request")
        self.scheduler = Scheduler(self.runner, RowBudget(cost), overlap, prefixes)
        self.eos_token_ids = eos_token_ids(loaded)
        self.vocab_size = int(loaded.model.get_input_embeddings().num_embeddings)
        self.history = AnswerHistory()
        self.draft_defaults: DraftDefaults = fixed_block_defaults(MAX_ROWS - 1)
        self.drafts_per_step = max(drafts for _, drafts in TIERS)  # the largest tier's

    @property
    def context_length(self) -> int:
        return self.runner.context_length

    @property
    def cached_tokens(self) -> int:
        """Tokens held in the slots of the requests running now."""
        return self.scheduler.cached_tokens

    @property
    def stats(self) -> SchedulerStats:
        return self.scheduler.stats

    def resolve(self, config: LLMAConfig) -> LLMAConfig:
        return self.draft_defaults.apply(config)

    def stream(self, prompt: Sequence[int], references: Mapping[RefId, Sequence[int]] | None = None,
               config: LLMAConfig = LLMAConfig(), verifier: Verifier | None = None,
               history: AnswerHistory | None = None) -> Iterator[StepEvent]:
        """As `Engine.stream`; bad input raises here, in the caller's thread. Closing the iterator
        cancels the request (its slot is freed before the next step)."""
        check_token_ids("prompt", prompt, self.vocab_size)
        references = check_references(references, self.vocab_size, config.max_reference_tokens)
        stop = StopConfig(config.max_new_tokens, self.eos_token_ids, config.stop_sequences, config.loop_rule())
        proposer = build_proposer(references, config, self.draft_defaults, self.drafts_per_step,
                                  self.history if history is None else history)
        state = DecodeState(prompt, self.context_length, proposer, verifier or build_verifier(config, prompt),
                            stop)
        if proposer is not None:
            proposer.prepare()  # the reference index, built here in the caller's thread
        return self.scheduler.submit(state, list(prompt))

    def generate(self, prompt: Sequence[int], references: Mapping[RefId, Sequence[int]] | None = None,
                 config: LLMAConfig = LLMAConfig(), verifier: Verifier | None = None,
                 history: AnswerHistory | None = None) -> DecodeResult:
        return collect(self.stream(prompt, references, config, verifier, history))

    def warm_up(self) -> bool:
        """Nothing set up ahead (a fixed shape's CUDA graph is captured on its first step): False,
        as `Engine.warm_up` says when it set nothing up."""
        return False

    def close(self) -> None:
        self.scheduler.close()


def _build(loaded: LoadedModel, slots: int, max_len: int | None, weights: str, fixed: bool | None,
           cost: CostModel | None, glue: bool, prompt_dtype: str | None) -> tuple[BatchRunner, CostModel]:
    """The runner and its cost model (`cost`, else measured now)."""
    runner = BatchRunner(loaded.model, slots, max_len, weights, fixed, glue, prompt_dtype)
    return runner, cost or runner.measure()


def open_engine(loaded: LoadedModel, options: EngineOptions | None = None) -> Engine | BatchEngine:
    """The engine `options` ask for: a `BatchEngine` of `options.batch_default(...)` slots where that is
    above 0 and the model family runs on it (else, with the reason logged, the one-at-a-time
    `Engine`), or an `Engine`. Callers tell them apart by `concurrent`."""
    options = options or EngineOptions()
    cuda = loaded.device.type == "cuda"
    slots = options.batch_default(cuda)
    if slots > 0:
        reason = unsupported_reason(loaded.model)
        if reason is None:
            return BatchEngine(loaded, slots=slots,
                               weights=options.batch_weights(cuda, int4_reason(loaded.model) is None),
                               glue=options.cpu_glue is not False, prompt_dtype=options.prompt_dtype,
                               prefix_mb=options.batch_prefix_mb(cuda))
        log.warning("batch engine not used, one request at a time instead: %s", reason)
    return Engine(loaded, options=options)
