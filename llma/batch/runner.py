"""The batch engine's model side: the weights, a slot per running request, the batched step."""
from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import torch
from transformers import PreTrainedModel

from llma.backend import context_length_of
from llma.batch.budget import CostModel
from llma.batch.cache import SlotCache
from llma.batch.rows import TILES, choose_tile
from llma.batch.step import BatchStep, Block
from llma.cpu.weights import int4_weights
from llma.static.family import unsupported_reason
from llma.static.weights import LlamaWeights

log = logging.getLogger(__name__)

MAX_ROWS = 32  # the largest block one request verifies in a step (the last token and 31 drafted)
PREFILL_CHUNK = 256  # a prompt enters the cache this many tokens a step, between the others' steps


class BatchRunner:
    """Runs steps over the blocks of up to `slots` requests, each in its own cache slot.

    `max_len` caps the context (default: the model's, at most 4096: each slot holds a whole context).
    Raises ValueError for a model family the static arithmetic does not cover (llma.static.family).
    `tile`: the row tile the products run over, the smallest for which this machine's kernels give
    every row the same bits whatever the row count (checked at start-up on the model's weights);
    `invariant` is False where no tile does, and a request's output may then differ from its solo
    run (logged). `weights`: "full" (the model's own) or "int4" (llma.cpu: 4-bit layers and a
    bf16 output head, on CPU; a different engine setting, whose outputs may differ from full's).
    """

    def __init__(self, model: PreTrainedModel, slots: int = 8, max_len: int | None = None,
                 weights: str = "full") -> None:
        reason = unsupported_reason(model)
        if reason is not None:
            raise ValueError(f"the batch engine cannot run {type(model).__name__}: {reason}")
        self.device = model.device
        self.context_length = min(context_length_of(model), max_len or 4096)
        self.capacity = -(-(self.context_length + MAX_ROWS) // 64) * 64
        with torch.no_grad():
            if weights == "int4":
                self.weights, tile = int4_weights(model, self.capacity)
            elif weights == "full":
                self.weights = LlamaWeights(model, self.capacity, compile=False)
                layer = self.weights.layers[0]
                tile = choose_tile((self.weights.lm_head, layer.qkv, layer.gate_up, layer.o_t.t(),
                                    layer.down_t.t()))
            else:
                raise ValueError(f"weights must be 'full' or 'int4', got {weights!r}")
            w = self.weights
            self.cache = SlotCache(len(w.layers), slots, w.kv_heads, self.capacity, w.head_dim, w.dtype,
                                   self.device)
        self.invariant = tile is not None
        self.tile = tile or TILES[-1]
        if not self.invariant:
            log.warning("this machine's matrix products round rows differently by row count: batched "
                        "outputs may differ from solo runs")
        self.step = BatchStep(self.weights, self.cache, self.tile)

    @property
    def slots(self) -> int:
        return self.cache.slots

    def attention_length(self, need: int) -> int:
        """The attention length L for a request that may reach `need` keys: powers of two from 128 to
        512, then multiples of 512, at most the capacity. Fixed for the request's whole generation."""
        size = 128
        while size < min(need, 512):
            size *= 2
        return min(size if need <= 512 else -(-need // 512) * 512, self.capacity)

    def run(self, blocks: Sequence[Block]) -> torch.Tensor:
        """One step: the logits [rows, vocab] (fp32) of `blocks`' rows, in order."""
        return self.step(blocks)

    def measure(self, rows: Sequence[int] = (2, 4, 8, 16, 32, 64, 128, 256)) -> CostModel:
        """The step's cost by row count, timed now on a free slot (the faster of two runs each)."""
        slot = self.cache.acquire()
        try:
            def timed(r: int) -> float:
                blocks = [Block.chunk(slot, 0, [0] * min(MAX_ROWS, r - i * MAX_ROWS), 128, logits=True)
                          for i in range(-(-r // MAX_ROWS))]
                best = float("inf")
                for _ in range(2):
                    start = time.perf_counter()
                    self.run(blocks)
                    if self.device.type == "cuda":
                        torch.cuda.synchronize(self.device)
                    best = min(best, time.perf_counter() - start)
                return best

            return CostModel.measure(timed, rows)
        finally:
            self.cache.release(slot)
