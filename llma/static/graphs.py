"""CUDA graph capture for the static backend (a fixed-shape function captured once, then replayed),
and its inputs' way to the device."""
from __future__ import annotations

from collections.abc import Callable

import torch


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


def upload(values: list[int], device: torch.device) -> torch.Tensor:
    """Ints to the device without the host waiting: a copy from pageable memory synchronises the
    stream, so the host would stop until every queued step had run, and its next work (checking a
    forced draft, proposing the next) would no longer overlap the GPU's. Pinned (PyTorch's caching
    host allocator keeps the buffer until the copy is done) and non-blocking instead."""
    tensor = torch.tensor(values, dtype=torch.long)
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)
