"""CUDA graph capture for the static backend (a fixed-shape function captured once, then replayed),
its captured steps, and its inputs' way to the device."""
from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from llma.static.tree import NO_MOVE

log = logging.getLogger(__name__)


def graph_length(n: int, limit: int) -> int:
    """The prefill length captured for an `n`-token prompt: the first of 64, 96, 128, 192, 256, 384,
    ... (powers of two and their midpoints) that holds it, at most `limit`. So a server captures
    two prefill graphs per doubling of the prompt length, each padding a prompt by less than half."""
    size = 64
    while size < n:
        size = size * 3 // 2 if size & (size - 1) == 0 else size // 3 * 4
    return max(n, min(size, limit))


def capture(fn: Callable[[torch.Tensor], torch.Tensor], static_inp: torch.Tensor, stream: torch.cuda.Stream,
            pool: tuple[int, int] | None = None) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
    """`fn(static_inp)` captured in a CUDA graph; returns the graph and its output tensor, which each
    replay overwrites. Two warm-up runs on the side `stream` first: lazy allocations, kernel selection
    and torch.compile must not happen inside the capture. Pass the same stream to every capture:
    cuBLAS keeps a workspace (up to 32 MB) for each stream it ran on, for good. `pool`: a memory pool
    shared with other graphs (safe when each replay's output is read before another graph of the
    pool replays)."""
    device = static_inp.device
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        for _ in range(2):
            fn(static_inp)
    torch.cuda.current_stream(device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=pool):
        out = fn(static_inp)
    return graph, out


def upload(values: list[int], device: torch.device, into: torch.Tensor | None = None) -> torch.Tensor:
    """Ints to the device (into `into` if given: a graph's static input) without the host waiting: a
    copy from pageable memory synchronises the stream, so the host would stop until every queued step
    had run, and its next work (checking a forced draft, proposing the next) would no longer overlap
    the GPU's. Pinned (PyTorch's caching host allocator keeps the buffer until the copy is done) and
    non-blocking instead."""
    tensor = torch.tensor(values, dtype=torch.long)
    if device.type == "cuda":
        tensor = tensor.pin_memory()
    if into is None:
        return tensor.to(device, non_blocking=True)
    return into.copy_(tensor, non_blocking=True)


class CapturedSteps:
    """StaticBackend's captured steps, one per (block, attention length), and the split-KV kernels
    they run (it owns `_step`, the shapes, `_graphs`, `_split` and the capture stream `_side`)."""

    def _graph(self, block: int, length: int, pos: int) -> tuple[torch.cuda.CUDAGraph, torch.Tensor, tuple]:
        """The captured step for (block, L), made on first use. Warm-up and capture write keys at
        positions >= `pos` (past the sequence), which later steps overwrite before reading."""
        key = (block, length)
        if key not in self._graphs:
            extra = 2 * block + self.tree + len(NO_MOVE) if self.tree else 0  # a packed block's rows, drafts, move
            static_inp = torch.zeros(self.rows * block + 1 + extra, dtype=torch.long, device=self.device)
            static_inp[self.rows * block] = pos  # the start position: after the ids
            graph, out = capture(lambda inp: self._step(inp, length), static_inp, self._side)
            self._graphs[key] = (graph, static_inp, out)
            log.info("captured a CUDA graph for block %d, attention length %d", block, length)
        return self._graphs[key]

    def _split_kernel(self, block: int) -> Callable[..., torch.Tensor]:
        """The split-KV attention for `block` rows (its buffers made in the warm-up, never in a capture)."""
        if block not in self._split:
            from llma.static.split_attention import SplitAttention  # needs triton: imported only if chosen

            self._split[block] = SplitAttention(block, self.heads, self.kv_heads, self.head_dim, self.capacity,
                                                self.scale, self.device, self.rows, self.tree)
        return self._split[block]
