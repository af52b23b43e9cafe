"""CUDA graphs for the static backend (a fixed-shape function captured once, then replayed), the
cache of its captured steps and prefills, and its inputs' way to the device."""
from __future__ import annotations

import array
import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)


def graph_length(n: int, limit: int) -> int:
    """The prefill length captured for an `n`-token prompt: the first of 64, 96, 128, 192, 256, 384,
    ... (powers of two and their midpoints) that holds it, at most `limit`. So a server captures
    two prefill graphs per doubling of the prompt length, each padding a prompt by less than half."""
    size = 64
    while size < n:
        size = size * 3 // 2 if size & (size - 1) == 0 else size // 3 * 4
    return max(n, min(size, limit))


def capture(fn: Callable[[torch.Tensor], object], static_inp: torch.Tensor, stream: torch.cuda.Stream,
            pool: tuple[int, int] | None = None) -> tuple[torch.cuda.CUDAGraph, object]:
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
    packed = array.array("q", values)  # far faster than torch.tensor(list) for long lists
    tensor = torch.frombuffer(packed, dtype=torch.long) if packed else torch.zeros(0, dtype=torch.long)
    if device.type == "cuda":
        tensor = tensor.pin_memory()
    if into is None:
        return tensor.to(device, non_blocking=True)
    return into.copy_(tensor, non_blocking=True)


@dataclass
class Captured:
    """A captured function: replaying `graph` runs it on `inp` (copy the inputs in first) and
    leaves its result in `out` (overwritten by the next replay)."""

    graph: torch.cuda.CUDAGraph
    inp: torch.Tensor
    out: object

    def replay(self) -> object:
        self.graph.replay()
        return self.out


class GraphCache:
    """The static backend's CUDA graphs: one per step shape (block, attention length) and one per
    padded prompt length, made on first use. Every capture warms up on one side stream (cuBLAS keeps
    a workspace per stream it ran on); the prefill graphs share one memory pool, safe because each
    prefill's output is read before the next prefill replays."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.side = torch.cuda.Stream(device)
        self.pool = torch.cuda.graph_pool_handle()
        self.steps: dict[tuple[int, int], Captured] = {}
        self.prefills: dict[int, Captured] = {}

    def step(self, key: tuple[int, int], inp: Callable[[], torch.Tensor],
             fn: Callable[[torch.Tensor], object]) -> Captured:
        """The step graph for `key` = (block, attention length): `fn(inp())` captured on first use."""
        if key not in self.steps:
            static_inp = inp()
            graph, out = capture(fn, static_inp, self.side)
            self.steps[key] = Captured(graph, static_inp, out)
            log.info("captured a CUDA graph for block %d, attention length %d", *key)
        return self.steps[key]

    def prefill(self, length: int, fn: Callable[[torch.Tensor], object]) -> Captured:
        """The prefill graph for a padded prompt of `length` tokens, captured on first use."""
        if length not in self.prefills:
            static_inp = torch.zeros(length, dtype=torch.long, device=self.device)
            graph, out = capture(fn, static_inp, self.side, self.pool)
            self.prefills[length] = Captured(graph, static_inp, out)
            log.info("captured a CUDA graph for the prefill of %d (padded) tokens", length)
        return self.prefills[length]
