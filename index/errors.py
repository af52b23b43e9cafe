"""Exceptions raised by the index package.

Every message names the offending file or folder and says how to fix it, so
the CLI and the app can show it to the user verbatim.
"""
from __future__ import annotations

from pathlib import Path

REBUILD_HINT = "rebuild with: python -m index build {docs} --out {out}"


def rebuild_hint(out_dir: Path | str, docs_dir: Path | str | None = None) -> str:
    """The command that repairs an index folder (docs folder if known)."""
    return REBUILD_HINT.format(docs=docs_dir or "DOCS", out=out_dir)


class IndexingError(Exception):
    """Base class of every error raised by the index package."""


class IndexMissingError(IndexingError):
    """There is no index in the folder (never built, or its manifest is gone)."""


class IndexCorruptError(IndexingError):
    """An index file is damaged, truncated or inconsistent with the manifest."""


class EmbedderMismatchError(IndexingError):
    """The index was built with a different embedder than the one requested."""


class NoDocumentsError(IndexingError):
    """The documents folder is missing or holds nothing that can be indexed."""


class EmbedderNotFoundError(IndexingError):
    """The embedding model cannot be loaded (not bundled, not a local folder, not cached)."""
