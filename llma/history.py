"""Earlier answers' next tokens, to guess where an answer starts a new copy (pure Python, token ids).

Where an answer starts a new copy, its next token is often in a reference but never after the
output's last token, so no draft anchored on that suffix holds it. `copy_start` drafts a copy that
starts at a token earlier answers wrote after the same last token; the model verifies it like any
other draft, so the output cannot change (docs/DESIGN.md, "Drafting rules").
"""
from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Collection, Sequence

from llma.reference_index import ReferenceIndex
from llma.types import Draft

MAX_PAIRS = 200_000  # distinct (token, next token) pairs kept: ~20 MB at most


class AnswerHistory:
    """How often each token followed each token in the answers seen so far (an engine's earlier
    answers, every user's: they change only the speed, never an output).

    Thread-safe. Invariant: `len(self)` is the number of distinct (token, next token) pairs kept,
    at most `max_pairs` after every `add` (beyond it the rarer half is dropped)."""

    def __init__(self, max_pairs: int = MAX_PAIRS) -> None:
        """`max_pairs` >= 1, else ValueError."""
        if max_pairs < 1:
            raise ValueError(f"max_pairs must be >= 1, got {max_pairs}")
        self.max_pairs = max_pairs
        self._next: dict[int, Counter[int]] = {}
        self._pairs = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self._pairs

    def add(self, tokens: Sequence[int], after: int | None = None) -> None:
        """Count each pair of neighbours in `tokens` (and `after`, the token before them, if given)."""
        seq = [after, *tokens] if after is not None else list(tokens)
        with self._lock:
            for a, b in zip(seq, seq[1:]):
                followers = self._next.get(a)
                if followers is None:  # not setdefault: it would build a Counter for every pair
                    followers = self._next[a] = Counter()
                if b in followers:
                    followers[b] += 1
                else:
                    followers[b] = 1
                    self._pairs += 1
            if self._pairs > self.max_pairs:
                self._prune()

    def next_tokens(self, last: int, count: int) -> list[int]:
        """Up to `count` tokens that followed `last`, the most frequent first (ties: seen first);
        [] if none did."""
        with self._lock:
            followers = self._next.get(last)
            return [t for t, _ in followers.most_common(count)] if followers else []

    def clear(self) -> None:
        """Forget every pair."""
        with self._lock:
            self._next.clear()
            self._pairs = 0

    def _prune(self) -> None:
        """Keep the most frequent half of the pairs (the rare ones seldom predict anything)."""
        counts = sorted((n for followers in self._next.values() for n in followers.values()),
                        reverse=True)
        floor = counts[self.max_pairs // 2]
        for a in list(self._next):
            kept = Counter({b: n for b, n in self._next[a].items() if n > floor})
            if kept:
                self._next[a] = kept
            else:
                del self._next[a]
        self._pairs = sum(len(followers) for followers in self._next.values())


def copy_start(index: ReferenceIndex, history: AnswerHistory, context: Sequence[int], k: int,
               stop_tokens: Collection[int] = (), exclude: Collection[int] = (),
               tries: int = 4) -> Draft | None:
    """A draft of up to `k` tokens that starts a new copy at a token earlier answers wrote after the
    context's last token: a reference's slice from an occurrence of that token (the one the index
    ranks first after the context with it), so its `ref_id` and `offset` name a real span.

    The `tries` likeliest next tokens are tried in order; tokens in `exclude` (other drafts' first
    tokens), stop tokens and tokens in no reference are passed over. None if none is left."""
    # The lookup sees at most max_n tokens: the context's last max_n - 1, then the guess (no copy of
    # the whole prompt and answer per guess: this runs on the decoding step's critical path).
    tail = list(context[max(0, len(context) - index.max_n + 1) :])
    for token in history.next_tokens(context[-1], tries):
        if token in exclude or token in stop_tokens:  # a stop token would end the answer: nothing to gain
            continue
        after = index.lookup([*tail, token], max(1, k - 1), stop_tokens)  # matches `token` at least
        if after is None:
            continue
        tokens = (token, *after.tokens)[:k]
        return Draft(tokens=tokens, ref_id=after.ref_id, offset=after.offset - 1,
                     match_len=after.match_len - 1)
    return None
