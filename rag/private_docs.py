"""Documents a user uploaded: searchable in that user's session only, kept in memory, never saved.

The operator's index (built from the documents folder) is shared by every session; an upload joins
a `MemoryIndex` of its own session, which `retrieve` searches beside the shared index for that
session's questions only. Forgetting a session drops its uploads.
"""
from __future__ import annotations

import threading
from collections import OrderedDict

from index import Embedder, MemoryIndex


class SessionDocuments:
    """One `MemoryIndex` per session key. A session's index is made on its first `get`; `peek` never
    makes one. At most `max_sessions` sessions are kept: a new session beyond that drops the
    session used least recently (its uploads are forgotten). Safe to share between threads."""

    def __init__(self, embedder: Embedder, max_sessions: int = 128) -> None:
        if max_sessions < 1:
            raise ValueError(f"max_sessions must be >= 1, got {max_sessions}")
        self.embedder = embedder
        self.max_sessions = max_sessions
        self._indexes: OrderedDict[str, MemoryIndex] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def sessions(self) -> int:
        return len(self._indexes)

    def get(self, session: str) -> MemoryIndex:
        """The session's uploads, made empty if it has none; the session becomes the most recent."""
        with self._lock:
            docs = self._indexes.pop(session, None) or MemoryIndex(self.embedder)
            self._indexes[session] = docs
            while len(self._indexes) > self.max_sessions:
                self._indexes.popitem(last=False)
            return docs

    def peek(self, session: str) -> MemoryIndex | None:
        """The session's uploads if it has any index (none is made)."""
        with self._lock:
            if session in self._indexes:
                self._indexes.move_to_end(session)
            return self._indexes.get(session)

    def forget(self, session: str) -> None:
        """Drop the session's uploads (nothing happens for an unknown session)."""
        with self._lock:
            self._indexes.pop(session, None)
