"""The batch engine's model side: the weights, a slot per running request, the batched step."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import torch
from transformers import PreTrainedModel

from llma.backend import context_length_of
from llma.batch.budget import TIERS, CostModel
from llma.batch.cache import SlotCache
from llma.batch.rows import TILES, TRIALS, choose_tile, span_invariant
from llma.batch.step import BatchStep, Block, BlockOut
from llma.cpu.glue import CGlue
from llma.cpu.weights import int4_weights
from llma.loading import cache_root
from llma.static.family import unsupported_reason
from llma.static.weights import LlamaWeights

log = logging.getLogger(__name__)

MAX_ROWS = 32  # the largest block one request verifies in a step (the last token and 31 drafted)
PREFILL_CHUNK = 256  # a prompt enters the cache this many tokens a step, between the others' steps
PREFILL_TOKENS = 1024  # the most prompt tokens a step takes in (more prompts wait for the next step)


def prompt_pieces(tokens: int) -> int:
    """The MAX_ROWS-row pieces a prompt chunk of `tokens` takes in a fixed-shape step."""
    return -(-tokens // MAX_ROWS)


def fixed_blocks(slots: int) -> int:
    """The most blocks a fixed-shape step holds: every slot's, or a step's prompt pieces."""
    return 1 << (max(slots, PREFILL_TOKENS // MAX_ROWS) - 1).bit_length()


class BatchRunner:
    """Runs steps over the blocks of up to `slots` requests, each in its own cache slot.

    `max_len` caps the context (default: the model's, at most 4096: each slot holds a whole context).
    Raises ValueError for a model family the static arithmetic does not cover (llma.static.family).
    `tile`: the row tile the products run over, the smallest for which this machine's kernels give
    every row the same bits whatever the row count (checked at start-up on the model's weights);
    `invariant` is False where no tile does, and a request's output may then differ from its solo
    run (logged). `weights`: "full" (the model's own) or "int4" (llma.cpu: 4-bit layers and a
    bf16 output head, on CPU; a different engine setting, whose outputs may differ from full's).
    `glue`: with int4 weights, the elementwise work in C (llma.cpu.glue) where it builds, else in
    torch ops (logged; another engine setting, outputs its own greedy's). `prompt_dtype`: with int4
    weights, the prompt products' dtype (llma.cpu.weights.int4_weights; None: this CPU's default). `fixed`: decoding steps in fixed shapes (llma.batch.graph_step: Triton split attention, CUDA
    graphs on CUDA; on CPU only under Triton's interpreter, for tests), prompt chunks too (in pieces
    of 32 rows); default: on CUDA. Without it every step is eager (llma.batch.step).
    """

    def __init__(self, model: PreTrainedModel, slots: int = 8, max_len: int | None = None,
                 weights: str = "full", fixed: bool | None = None, glue: bool = False,
                 prompt_dtype: str | None = None) -> None:
        reason = unsupported_reason(model)
        if reason is not None:
            raise ValueError(f"the batch engine cannot run {type(model).__name__}: {reason}")
        self.device = model.device
        self.context_length = min(context_length_of(model), max_len or 4096)
        self.capacity = -(-(self.context_length + MAX_ROWS) // 64) * 64
        fixed = self.device.type == "cuda" if fixed is None else fixed
        self.slots = slots
        with torch.no_grad():
            if weights == "int4":
                if fixed:
                    raise ValueError("int4 weights run on the eager CPU step, not in fixed shapes")
                self.weights, tile = int4_weights(model, self.capacity,
                                                  CGlue.build(cache_root() / "glue") if glue else None, prompt_dtype)
            elif weights == "full":
                self.weights = LlamaWeights(model, self.capacity, compile=False)
                layer = self.weights.layers[0]
                trials = TRIALS
                if fixed:  # every bucket's row count (decoding blocks or prompt pieces)
                    most = fixed_blocks(slots) * MAX_ROWS
                    trials = tuple(sorted({*TRIALS, *(1 << i for i in range(14) if 1 << i <= most)}))
                tile = choose_tile((self.weights.lm_head, layer.qkv, layer.gate_up, layer.o_t.t(),
                                    layer.down_t.t()), trials)
            else:
                raise ValueError(f"weights must be 'full' or 'int4', got {weights!r}")
            w = self.weights
            # One slot more than requests: the scratch slot, where a fixed shape's dummy blocks write.
            self.cache = SlotCache(len(w.layers), slots + 1, w.kv_heads, self.capacity, w.head_dim, w.dtype,
                                   self.device)
            self.scratch = self.cache.acquire()
        self.invariant = tile is not None
        self.tile = tile or TILES[-1]
        if not self.invariant:
            log.warning("this machine's matrix products round rows differently by row count: batched "
                        "outputs may differ from solo runs")
        self.trim = span_invariant(w.heads, w.kv_heads, w.head_dim, self.tile, w.dtype, self.device)
        if not self.trim:
            log.info("attention over part of a request's keys rounds differently here: each step reads all")
        self.step = BatchStep(self.weights, self.cache, self.tile, self.trim,
                              self.weights.glue if weights == "int4" else None)
        self.fixed = None
        if fixed:
            from llma.batch.graph_step import GraphStep  # needs triton: imported only here

            self.fixed = GraphStep(self.weights, self.cache, self.scratch, self.tile,
                                   graphs=self.device.type == "cuda", max_blocks=fixed_blocks(slots))

    @property
    def reuses_prefixes(self) -> bool:
        """Do a prompt chunk's keys and values depend only on the tokens up to its end here (eager
        steps, row-invariant products, attention over key spans whatever the request's length), so
        that a stored copy may stand for them (llma.batch.prefix)?"""
        return self.fixed is None and self.invariant and self.trim

    def attention_length(self, need: int) -> int:
        """The attention length L for a request that may reach `need` keys: powers of two from 128 to
        512, then multiples of 512, at most the capacity. Fixed for the request's whole generation."""
        size = 128
        while size < min(need, 512):
            size *= 2
        return min(size if need <= 512 else -(-need // 512) * 512, self.capacity)

    def run(self, blocks: Sequence[Block]) -> list[BlockOut]:
        """One step: per block (in order) its `out` rows' argmax and logits."""
        return self.launch(blocks)()

    def launch(self, blocks: Sequence[Block]) -> Callable[[], list[BlockOut]]:
        """One step started: call the result to wait for it (per block, in order, its `out` rows'
        argmax and logits). With `fixed` steps the prompt chunks and the decoding blocks are queued
        in their buckets' shapes, one after the other, and the host is free until the call."""
        if self.fixed is None:
            outs = self.step(blocks)
            return lambda: outs
        groups = [[i for i, b in enumerate(blocks) if b.prompt == prompt] for prompt in (True, False)]
        queued = [(group, self.fixed.launch([blocks[i] for i in group])) for group in groups if group]

        def result() -> list[BlockOut]:
            done: dict[int, BlockOut] = {}
            for group, launched in queued:
                done.update(zip(group, launched.result()))
            return [done[i] for i in range(len(blocks))]

        return result

    def measure(self, rows: Sequence[int] | None = None, position: int = 512) -> CostModel:
        """The step's cost, timed now on free slots (the faster of two runs each). Eager steps: by
        row count (default 2 to 256 rows). Fixed shapes: by shape, for each tier's block (its rows
        and drafts) at 1, 2, 4, ... requests up to every slot, keys up to `position` (so the shapes
        that decode most are captured before the first request, too)."""
        slot = self.cache.acquire()
        try:
            def timed(blocks: list[Block]) -> float:
                best = float("inf")
                for _ in range(2):
                    start = time.perf_counter()
                    self.run(blocks)
                    if self.device.type == "cuda":
                        torch.cuda.synchronize(self.device)
                    best = min(best, time.perf_counter() - start)
                return best

            at = min(position, self.capacity - 2 * MAX_ROWS)
            if self.fixed is not None:
                length = self.attention_length(at + MAX_ROWS)

                def shaped(n: int, r: int) -> float:
                    drafts = dict(TIERS)[r] or 1
                    parts = [[0] + [0] * ((r - 1) // drafts + (i < (r - 1) % drafts)) for i in range(drafts)]
                    return timed([Block.packed(slot, at, parts, length)[0]] * n)

                most = 1 << (self.slots - 1).bit_length()
                return CostModel.measure_shapes(shaped, [1 << i for i in range(most.bit_length())],
                                                [r for r, _ in TIERS])
            rows = [r for r in rows or (2, 4, 8, 16, 32, 64, 128, 256) if r <= self.slots * MAX_ROWS] or [2]
            return CostModel.measure(lambda r: timed([
                Block.packed(slot, 128, [[0] * min(MAX_ROWS, r - i * MAX_ROWS)], 256)[0]
                for i in range(-(-r // MAX_ROWS))]), rows)
        finally:
            self.cache.release(slot)
