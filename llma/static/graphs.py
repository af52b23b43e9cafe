"""CUDA graph capture for the static backend: a fixed-shape function captured once, then replayed."""
from __future__ import annotations

from collections.abc import Callable

import torch


def capture(fn: Callable[[torch.Tensor], torch.Tensor], static_inp: torch.Tensor,
            pool: tuple[int, int] | None = None) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
    """`fn(static_inp)` captured in a CUDA graph; returns the graph and its output tensor, which each
    replay overwrites. Two warm-up runs on a side stream first: lazy allocations, kernel selection and
    torch.compile must not happen inside the capture. `pool`: a memory pool shared with other graphs
    (safe when each replay's output is read before another graph of the pool replays)."""
    device = static_inp.device
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        for _ in range(2):
            fn(static_inp)
    torch.cuda.current_stream(device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=pool):
        out = fn(static_inp)
    return graph, out
