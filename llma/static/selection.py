"""The backend an `Engine` runs: the static backend where it can, else the generic HF loop."""
from __future__ import annotations

import logging

from transformers import PreTrainedModel

from llma.backend import Backend, HFBackend
from llma.options import EngineOptions
from llma.static.family import unsupported_reason

log = logging.getLogger(__name__)


def select_backend(model: PreTrainedModel, options: EngineOptions = EngineOptions(),
                   **static: int) -> Backend:
    """The backend `options` ask for on `model`'s device; `static`: StaticBackend's own sizes
    (`block`, `max_len`, `min_bucket`) where the static backend is chosen.

    "auto": the static backend with CUDA graphs on a CUDA device when the model family is supported
    (else the HF loop, with the reason logged); "hf": the HF loop; "static": the static backend
    without graphs (any device); "static-graphs": with graphs (CUDA only, ValueError elsewhere).
    The options' None choices are made by `EngineOptions.resolve`.
    """
    cuda = model.device.type == "cuda"
    if options.backend == "hf" or (options.backend == "auto" and not cuda):
        return HFBackend(model)
    if options.backend == "static-graphs" and not cuda:
        raise ValueError(f"CUDA graphs need a CUDA device; the model is on {model.device}")
    reason = unsupported_reason(model, full=True)
    if reason is not None:
        log.warning("static backend not used, falling back to the generic HF loop: %s", reason)
        return HFBackend(model)
    from llma.static.backend import StaticBackend

    graphs = options.backend != "static"
    chosen = options.resolve(cuda, graphs)
    return StaticBackend(model, graphs=graphs, attention=chosen.attention, compile=chosen.compile,
                         cache_copies=chosen.cache_copies, packed_drafts=chosen.packed_drafts, **static)
