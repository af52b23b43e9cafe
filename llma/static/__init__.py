"""Static-shape backend for Llama-family models: preallocated KV cache, fixed query block, CUDA graphs.

`StaticBackend` implements the Backend protocol; `select_backend` picks it or the generic HF loop,
with a logged reason (docs/DESIGN.md).
"""
from llma.static.backend import DEFAULT_BLOCK, StaticBackend
from llma.static.family import FAMILY, unsupported_reason
from llma.static.selection import select_backend

__all__ = ["DEFAULT_BLOCK", "FAMILY", "StaticBackend", "select_backend", "unsupported_reason"]
