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
