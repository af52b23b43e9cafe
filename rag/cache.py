"""The answer cache: earlier answers to similar questions, offered to the decoder as references.

This is the paper's cache-assisted generation: a question close to one answered before often gets
much the same answer, which LLMA then copies instead of generating token by token.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from index import Embedder


@dataclass(frozen=True)
class CachedAnswer:
    question: str
    answer: str
    similarity: float


def _key(question: str) -> str:
    return " ".join(question.lower().split())


class AnswerCache:
    """A bounded LRU of (question, answer, question embedding); safe to share between threads."""

    def __init__(self, embedder: Embedder, capacity: int = 256) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.embedder = embedder
        self.capacity = capacity
        self._entries: OrderedDict[str, tuple[str, str, np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def _vector(self, question: str) -> np.ndarray:
        return self.embedder.embed([question])[0]

    def put(self, question: str, answer: str) -> None:
        if not answer.strip():
            return
        vector = self._vector(question)
        with self._lock:
            key = _key(question)
            self._entries.pop(key, None)
            self._entries[key] = (question, answer, vector)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def lookup(self, question: str, threshold: float, limit: int = 2) -> list[CachedAnswer]:
        """Up to `limit` cached answers whose question has cosine similarity >= threshold, best first."""
        with self._lock:
            if not self._entries:
                return []
        vector = self._vector(question)
        with self._lock:
            keys = list(self._entries)
            sims = np.stack([entry[2] for entry in self._entries.values()]) @ vector
            best = [i for i in np.argsort(-sims)[:limit] if sims[i] >= threshold]
            for i in best:
                self._entries.move_to_end(keys[i])
            return [CachedAnswer(self._entries[keys[i]][0], self._entries[keys[i]][1], float(sims[i])) for i in best]


class SessionCaches:
    """One `AnswerCache` per session key, so that no session ever sees another session's answers.

    A session's cache is made on its first `get`; `peek` never makes one. At most `max_sessions`
    sessions are kept: a new session beyond that drops the session used least recently (its cached
    answers are forgotten, nothing else is). `capacity` bounds each session's cache and applies to
    caches made after it is set. Safe to share between threads.
    """

    def __init__(self, embedder: Embedder, capacity: int = 256, max_sessions: int = 128) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        if max_sessions < 1:
            raise ValueError(f"max_sessions must be >= 1, got {max_sessions}")
        self.embedder = embedder
        self.capacity = capacity
        self.max_sessions = max_sessions
        self._caches: OrderedDict[str, AnswerCache] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """Cached answers over all sessions."""
        with self._lock:
            caches = list(self._caches.values())
        return sum(len(cache) for cache in caches)

    @property
    def sessions(self) -> int:
        return len(self._caches)

    def get(self, session: str) -> AnswerCache:
        """The session's cache, made if it has none; the session becomes the most recently used."""
        with self._lock:
            cache = self._caches.pop(session, None)
            if cache is None:
                cache = AnswerCache(self.embedder, self.capacity)
            self._caches[session] = cache
            while len(self._caches) > self.max_sessions:
                self._caches.popitem(last=False)
            return cache

    def peek(self, session: str) -> AnswerCache | None:
        """The session's cache if it has one (none is made); the session becomes the most recent."""
        with self._lock:
            if session in self._caches:
                self._caches.move_to_end(session)
            return self._caches.get(session)

    def forget(self, session: str) -> None:
        """Drop the session's cached answers (nothing happens for an unknown session)."""
        with self._lock:
            self._caches.pop(session, None)
