"""`PrefixStore`: the keys and values of prompt chunks already computed, reused by a later prompt
that starts with the same chunks (a chat's next turn starts with the turns before it).

A prompt enters the cache in chunks at fixed positions (0, chunk, 2 * chunk, ...). Where a chunk's
keys and values depend only on the tokens up to its end (`BatchRunner.reuses_prefixes`: eager
steps, row-invariant products, attention over key spans that do not depend on the request's
length), the stored copy holds the very bits the request would compute itself, so restoring it
changes no output, only the prefill's time. Chunks are keyed by a hash chained over every token up
to their end; the least recently used go first once the store is full.
"""
from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import torch

from llma.batch.cache import SlotCache

log = logging.getLogger(__name__)


def chunk_keys(prompt: Sequence[int], chunk: int, count: int) -> list[bytes]:
    """The keys of `prompt`'s first `count` whole chunks: key i hashes every token before
    `(i + 1) * chunk` (chained: key i covers key i - 1 and chunk i's tokens)."""
    keys, key = [], b""
    ids = np.asarray(prompt[: count * chunk], dtype=np.int64)
    for i in range(count):
        key = hashlib.blake2b(key + ids[i * chunk : (i + 1) * chunk].tobytes(), digest_size=16).digest()
        keys.append(key)
    return keys


class PrefixStore:
    """Stored chunks of `chunk` positions of `cache`'s slots, at most `max_bytes` of them.

    `restore(slot, prompt)` copies the longest run of stored chunks that `prompt` starts with into
    `slot` (never the chunk holding the prompt's last token: its logits are needed) and returns the
    tokens restored; `save(slot, prompt, end)` stores the chunk of `slot` ending at `end` if it is a
    whole chunk of `prompt` not stored yet. Not thread-safe: the scheduler's loop alone calls it.
    """

    def __init__(self, cache: SlotCache, chunk: int, max_bytes: int) -> None:
        self.cache = cache
        self.chunk = chunk
        kv = cache.kv
        per_chunk = kv.element_size() * kv.shape[0] * kv.shape[1] * kv.shape[3] * chunk * kv.shape[5]
        self.max_chunks = max_bytes // per_chunk
        self._chunks: OrderedDict[bytes, torch.Tensor] = OrderedDict()  # key -> [2, layers, kv_heads, chunk, d]
        self.restored_tokens = 0  # totals since start
        self.saved_chunks = 0

    def __len__(self) -> int:
        return len(self._chunks)

    def restore(self, slot: int, prompt: Sequence[int]) -> int:
        """Tokens of `prompt` now in `slot` from stored chunks (0 if its first chunk is not stored)."""
        usable = (len(prompt) - 1) // self.chunk
        if usable < 1 or not self._chunks:
            return 0
        hits = []
        for key in chunk_keys(prompt, self.chunk, usable):
            stored = self._chunks.get(key)
            if stored is None:
                break
            self._chunks.move_to_end(key)
            hits.append(stored)
        for i, stored in enumerate(hits):
            self.cache.kv[:, :, slot, :, i * self.chunk : (i + 1) * self.chunk] = stored
        tokens = len(hits) * self.chunk
        self.restored_tokens += tokens
        return tokens

    def save(self, slot: int, prompt: Sequence[int], end: int) -> None:
        """Store `slot`'s positions [end - chunk, end) where `end` closes a whole chunk of `prompt`."""
        if self.max_chunks < 1 or end % self.chunk or not 0 < end <= len(prompt):
            return
        key = chunk_keys(prompt, self.chunk, end // self.chunk)[-1]
        if key in self._chunks:
            self._chunks.move_to_end(key)
            return
        while len(self._chunks) >= self.max_chunks:
            self._chunks.popitem(last=False)
        self._chunks[key] = self.cache.kv[:, :, slot, :, end - self.chunk : end].clone()
        self.saved_chunks += 1

    def clear(self) -> None:
        self._chunks.clear()
