"""Static-shape backend for Llama-family models: preallocated KV cache, fixed query block, CUDA graphs.

`StaticBackend` (llma/static/backend.py, whose docstring explains the design) implements the
Backend protocol; `select_backend` picks it or the generic HF loop, with a logged reason.
"""
from llma.static.backend import DEFAULT_BLOCK, StaticBackend
from llma.static.support import BACKENDS, FAMILY, select_backend, unsupported_reason

__all__ = ["BACKENDS", "DEFAULT_BLOCK", "FAMILY", "StaticBackend", "select_backend", "unsupported_reason"]
