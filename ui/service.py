"""The app's back end: builds/updates the index and loads the pipeline in the background, so the
page is up at once and shows what is happening; afterwards it re-indexes uploads."""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("llma-rag.app")


def _default_builder(docs_dir: Path, index_dir: Path,
                     on_progress: Callable[[str, int, int], None] | None = None) -> Any:
    from index import build_index

    return build_index(docs_dir, index_dir, progress=True, on_progress=on_progress)


def _has_index(index_dir: Path) -> bool:
    from index import has_index

    return has_index(index_dir)


def default_loader(index_dir: Path, model: str | None, device: str | None, dtype: str | None,
                   engine_options: Any = None) -> Any:
    """The pipeline over `index_dir`; `engine_options`: llma.EngineOptions (None: the defaults)."""
    from rag import RAGPipeline

    return RAGPipeline.from_paths(str(index_dir), model=model, device=device, dtype=dtype,
                                  engine_options=engine_options)


def _default_reload(pipe: Any, index_dir: Path) -> None:
    """Point the pipeline at the rebuilt index (RAGPipeline keeps it in `.index`)."""
    reload = getattr(pipe, "reload_index", None)
    if callable(reload):
        reload()
        return
    from index import load_index

    pipe.index = load_index(index_dir)


class Service:
    """Owns the pipeline. `status` is a one-line, human-readable state for the UI."""

    def __init__(self, docs_dir: Path | str, index_dir: Path | str, model: str | None = None,
                 device: str | None = None, dtype: str | None = None, *,
                 builder: Callable[[Path, Path], Any] | None = None,
                 loader: Callable[..., Any] = default_loader,
                 reloader: Callable[[Any, Path], None] = _default_reload) -> None:
        self.docs_dir, self.index_dir = Path(docs_dir), Path(index_dir)
        self.model, self.device, self.dtype = model, device, dtype
        # The default builder reports its progress into the status line (the page polls it).
        self._builder = builder or self._build_with_progress
        self._loader, self._reloader = loader, reloader
        self.pipe: Any = None
        self.error: str | None = None
        self.ready = threading.Event()
        self._status = "Starting…"
        self._stage = "Updating the index"
        self._since = time.monotonic()
        self._lock = threading.Lock()  # index updates, one at a time

    # -- status ---------------------------------------------------------------------------
    def public(self, text: str) -> str:
        """`text` without this machine's absolute paths: the documents and index folders become
        their names, the home folder "~" (the page shows statuses and errors to every user)."""
        folders = {}
        for folder in (self.docs_dir, self.index_dir):
            for form in {str(folder), str(folder.resolve())}:
                if Path(form).is_absolute():
                    folders[form] = folder.name
        for form in sorted(folders, key=len, reverse=True):
            text = text.replace(form, folders[form])
        home = str(Path.home())
        return text.replace(home + "/", "~/") if len(home) > 1 else text

    def _set(self, status: str) -> None:
        self._status, self._since = self.public(status), time.monotonic()
        log.info("%s", status)

    @property
    def status(self) -> str:
        if self.ready.is_set() or self.error:
            return self._status
        return f"{self._status} ({time.monotonic() - self._since:.0f} s)"

    def _build_with_progress(self, docs_dir: Path, index_dir: Path) -> Any:
        return _default_builder(docs_dir, index_dir, on_progress=self._progress)

    def _progress(self, stage: str, done: int, total: int) -> None:
        """The index build's progress into the status line (kept out of the log: one per slice)."""
        what = "reading files" if stage == "reading" else "embedding chunks"
        self._status = f"{self._stage}: {what} {done}/{total}"

    # -- start-up -------------------------------------------------------------------------
    def start(self, background: bool = True) -> None:
        if background:
            threading.Thread(target=self._startup, name="llma-startup", daemon=True).start()
        else:
            self._startup()

    def _startup(self) -> None:
        try:
            # A committed index is updated; a folder without one (new, or holding what a killed
            # first build left, its .build.lock included) is built.
            first = not _has_index(self.index_dir)
            self._stage = "Building the index (first start: embedding every document)" if first \
                else "Updating the index (only new or changed documents)"
            self._set(f"{self._stage}: {self.docs_dir.name}/ → {self.index_dir.name}/…")
            with self._lock:
                report = self._builder(self.docs_dir, self.index_dir)
            index_line = report.summary() if hasattr(report, "summary") else str(report)
            model = Path(self.model).name if self.model and Path(self.model).is_absolute() else self.model
            self._set(f"Loading the model ({model or 'bundled default'})…")
            self.pipe = self._loader(self.index_dir, self.model, self.device, self.dtype)
            self._set(f"Ready. Index: {index_line}")
            self.ready.set()
        except Exception as exc:  # shown in the UI; the server keeps running
            log.exception("start-up failed")
            self.error = self.public(f"{type(exc).__name__}: {exc}")
            self._set(f"Start-up failed: {self.error}")

    # -- uploads --------------------------------------------------------------------------
    def reindex(self) -> Any:
        """Index new/changed documents incrementally, then point the pipeline at the new index."""
        with self._lock:
            report = self._builder(self.docs_dir, self.index_dir)
            if self.pipe is not None:
                self._reloader(self.pipe, self.index_dir)
        return report
