"""The reference index: finds the output's suffix in the references and drafts what follows it.

Pure Python, token ids only (no torch). Every n-gram (min_n <= n <= max_n) of every reference maps
to the copy start after it. A reference may grow (the answer being generated): only its new n-grams
are indexed, so a lookup costs O(max_n) probes whatever the output length (with `near`, also a scan
of the last token's occurrences). The drafting rules are described in docs/DESIGN.md.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from itertools import repeat
from typing import Literal

from llma.checks import all_ints
from llma.types import Draft, RefId

Policy = Literal["recent", "first", "longest"]
POLICIES: tuple[str, ...] = ("recent", "first", "longest")


class ReferenceIndex:
    """N-gram index over several references, each a list of token ids under an id (label).

    A lookup matches the longest suffix of the context first (max_n down to min_n). Among the
    occurrences of that suffix, the first rule that applies chooses:
    1. `near` (a lookup's argument: (reference, position) where the last accepted copy ended): the
       first occurrence in that reference at or after that position;
    2. `prefer` (a reference id, the answer itself): that reference's latest occurrence;
    3. `policy`: "recent" (the occurrence indexed last), "first" (the earliest occurrence in the
       earliest reference) or "longest" (the most tokens after it, capped at k; ties: earliest).

    Invariants: an n-gram is indexed only once a token follows it, so every draft is non-empty;
    a draft is `references[ref_id][offset : offset + len]` and the `match_len` tokens before
    `offset` equal the context's last `match_len` tokens. Only the table the policy needs is kept
    ("recent": the latest occurrence overall; "first" and "longest": each reference's first).
    """

    def __init__(
        self,
        references: Mapping[RefId, Sequence[int]] | None = None,
        *,
        min_n: int = 1,
        max_n: int = 4,
        policy: Policy = "recent",
        prefer: RefId | None = None,
        candidates: int = 1,
    ) -> None:
        """`references`: id -> token ids, indexed at `build()` or first use. `min_n`, `max_n`: the
        n-gram lengths matched (1 <= min_n <= max_n). `candidates`: how many drafts `lookup_many`
        may rank (> 1 also keeps every occurrence of the preferred reference's n-grams).
        Raises ValueError for settings out of range."""
        if min_n < 1 or max_n < min_n:
            raise ValueError(f"need 1 <= min_n <= max_n, got min_n={min_n}, max_n={max_n}")
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
        if not isinstance(candidates, int) or candidates < 1:
            raise ValueError(f"candidates must be an int >= 1, got {candidates!r}")
        self.min_n = min_n
        self.max_n = max_n
        self.policy = policy
        self.prefer = prefer
        self.candidates = candidates
        # Insertion order is creation order: the "earliest reference" of first/longest.
        self._refs: dict[RefId, list[int]] = {}
        self._last: dict[tuple[int, ...], tuple[RefId, int]] = {}  # "recent"
        self._first: dict[RefId, dict[tuple[int, ...], int]] = {}  # "first", "longest"
        self._preferred: dict[tuple[int, ...], int] = {}  # latest occurrence in `prefer`
        # Every copy start, in indexing order, under the token before it (an n-gram's starts are those
        # whose n - 1 tokens before match too: one table for every n), for `near` and `lookup_many`;
        # `prefer`'s own table (candidates > 1): all its ends per n-gram.
        self._after: defaultdict[int, list[tuple[RefId, int]]] = defaultdict(list)
        self._preferred_all: dict[tuple[int, ...], list[int]] = {}
        # Checked and indexed at `build()` or first use: a decoder builds it while a GPU prefills.
        self._pending = list((references or {}).items())

    @property
    def references(self) -> Mapping[RefId, Sequence[int]]:
        self.build()
        return self._refs

    def build(self) -> None:
        """Check and index the constructor's references now (else it happens on first use).
        Raises ValueError for a reference holding something other than ints."""
        if not self._pending:  # called before every lookup: nothing to do but this test
            return
        pending = self._pending
        self._pending = []
        for ref_id, tokens in pending:
            self._index(ref_id, _checked(ref_id, tokens))

    def extend(self, ref_id: RefId, tokens: Iterable[int]) -> None:
        """Append tokens to reference `ref_id` (created if new), indexing only the new n-grams."""
        self.build()
        self._index(ref_id, _checked(ref_id, tokens))

    def _index(self, ref_id: RefId, tokens: list[int]) -> None:
        ref = self._refs.setdefault(ref_id, [])
        old = len(ref)
        ref.extend(tokens)
        # An n-gram is indexed only once a token follows it, so every occurrence has something to
        # copy (a growing reference never matches itself emptily): ends old..len-1 are new.
        if ref_id == self.prefer:
            # It wins wherever it holds an n-gram, so the policy's tables never need it; it grows a
            # few tokens a step (the answer), so a plain loop. Later ends overwrite earlier ones.
            for end in range(max(old, self.min_n), len(ref)):
                for n in range(self.min_n, min(self.max_n, end) + 1):
                    key = tuple(ref[end - n : end])
                    self._preferred[key] = end
                    if self.candidates > 1:
                        self._preferred_all.setdefault(key, []).append(end)
            return
        first = self._first.setdefault(ref_id, {})
        after = self._after
        start = max(old, 1)
        for token, item in zip(ref[start - 1 : -1], zip(repeat(ref_id), range(start, len(ref)))):
            after[token].append(item)
        for n in range(self.min_n, self.max_n + 1):
            if self.policy == "recent":  # later ends overwrite earlier ones: the latest wins
                ngrams, ends = _ngrams(ref, n, max(old, n))
                self._last.update(zip(ngrams, zip(repeat(ref_id), ends)))
            else:  # reversed, so the earliest new end wins; an n-gram already indexed keeps its own
                new = dict(zip(*_ngrams(ref, n, max(old, n), backwards=True)))
                # A new reference holds no n-gram of this length yet (keys of other lengths never
                # collide), so only a grown one needs the filter.
                if old == 0:
                    first.update(new)
                else:
                    first.update({key: e for key, e in new.items() if key not in first})

    def lookup(self, context: Sequence[int], k: int, stop_tokens: Collection[int] = (),
               near: tuple[RefId, int] | None = None) -> Draft | None:
        """The draft of up to `k` tokens (k >= 1) after the longest suffix of `context` found in a
        reference, chosen by the class docstring's rules; None if no suffix of min_n or more tokens
        occurs. The draft ends after the first token in `stop_tokens` it holds."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.build()
        for n in range(min(self.max_n, len(context)), self.min_n - 1, -1):
            found = self._find(tuple(context[len(context) - n :]), k)
            if found is None:
                continue
            if near is not None:
                found = self._continuation(context, n, near) or found
            ref_id, start = found
            tokens = _cut_at_stop(tuple(self._refs[ref_id][start : start + k]), frozenset(stop_tokens))
            return Draft(tokens=tokens, ref_id=ref_id, offset=start, match_len=n)
        return None

    def lookup_many(self, context: Sequence[int], k: int, stop_tokens: Collection[int] = (),
                    count: int | None = None, caps: Sequence[int] = (),
                    near: tuple[RefId, int] | None = None) -> list[Draft]:
        """Up to `count` drafts of up to `k` tokens (default count: one per cap, else `candidates`),
        ranked as `lookup` ranks them: the longest matched suffix first, within it the preferred
        reference's latest occurrences, then the policy's order; then shorter suffixes. The first
        is `lookup`'s draft; a draft that one already chosen starts with is skipped.

        `caps` (drafts packed into one block, llma.static.tree): the i-th draft (i >= 1) holds at
        most caps[i] tokens (and `k`; caps[1:] non-increasing), and all drafts together at most
        caps[0]: the first is cut to what the later ones leave. Returns [] if nothing matches;
        raises ValueError for k or count < 1 or caps that do not fit that shape."""
        count = (len(caps) if caps else self.candidates) if count is None else count
        if k < 1 or count < 1:
            raise ValueError(f"k and count must be >= 1, got k={k}, count={count}")
        if caps and (len(caps) < count or caps[0] <= sum(caps[1:count])
                     or any(a < b for a, b in zip(caps[1:count], caps[2:count]))):
            raise ValueError(f"caps needs one length per draft ({count}), the first more than the "
                             f"others' sum, the others no longer than the one before, got {tuple(caps)}")
        first = self.lookup(context, k, stop_tokens, near)
        if first is None or count == 1 or self.candidates == 1:
            return [first] if first else []
        # Every prefix of a chosen draft is skipped (up to the longest a later draft may be).
        longest = max(caps[1:count]) if caps else k
        drafts = [first]
        chosen = _prefixes(first.tokens, longest)
        stops = frozenset(stop_tokens)
        top = min(self.max_n, len(context))
        # The copy starts after the last token, by the length of the suffix they match (<= top). Each
        # is tried once, at its own length: at a shorter suffix it gives the same draft or a prefix of
        # it (the later caps are no longer), one already chosen or skipped.
        matched: dict[int, list[tuple[RefId, int]]] = {}
        for start, m in _match_lengths(self._after.get(context[-1], ()), self._refs, context, top):
            matched.setdefault(m, []).append(start)
        for n in range(top, self.min_n - 1, -1):
            for ref_id, start in self._starts(tuple(context[len(context) - n :]), matched.get(n, []), k):
                limit = min(k, caps[len(drafts)]) if caps else k
                draft = _cut_at_stop(tuple(self._refs[ref_id][start : start + limit]), stops)
                if draft in chosen:
                    continue
                chosen |= _prefixes(draft, longest)
                drafts.append(Draft(tokens=draft, ref_id=ref_id, offset=start, match_len=n))
                if len(drafts) == count:
                    return fit_first(drafts, caps[0]) if caps else drafts
        return fit_first(drafts, caps[0]) if caps else drafts

    def _starts(self, ngram: tuple[int, ...], found: list[tuple[RefId, int]], k: int
                ) -> Iterator[tuple[RefId, int]]:
        """Every copy start after `ngram` (`found`: the references', in indexing order), in
        `lookup_many`'s order."""
        yield from ((self.prefer, end) for end in reversed(self._preferred_all.get(ngram, ())))
        refs = self._refs
        if self.policy == "recent":
            yield from reversed(found)
        elif self.policy == "first":
            yield from found
        else:  # "longest": most tokens to copy (capped at k), ties earliest; full-length ones first
            yield from (item for item in found if len(refs[item[0]]) - item[1] >= k)
            rest = [item for item in found if len(refs[item[0]]) - item[1] < k]
            yield from sorted(rest, key=lambda item: item[1] - len(refs[item[0]]))

    def _continuation(self, context: Sequence[int], n: int, near: tuple[RefId, int]
                      ) -> tuple[RefId, int] | None:
        """The first copy start in reference `near[0]` at or after `near[1]` that follows the
        context's last `n` tokens, if any (never the preferred reference: its own rule wins there)."""
        ref_id, since = near
        if ref_id == self.prefer or ref_id not in self._refs:
            return None
        ref = self._refs[ref_id]
        suffix = list(context[len(context) - n :])
        for start in self._after.get(context[-1], ()):
            if start[0] == ref_id and start[1] >= max(since, n) and ref[start[1] - n : start[1]] == suffix:
                return start
        return None

    def _find(self, ngram: tuple[int, ...], k: int) -> tuple[RefId, int] | None:
        if ngram in self._preferred:
            return self.prefer, self._preferred[ngram]
        if self.policy == "recent":
            return self._last.get(ngram)
        found = [(ref_id, first[ngram]) for ref_id, first in self._first.items() if ngram in first]
        if not found or self.policy == "first":
            return found[0] if found else None
        # "longest": the most tokens to copy (capped at k); max() keeps the earliest of equals.
        return max(found, key=lambda item: min(k, len(self._refs[item[0]]) - item[1]))


def _cut_at_stop(tokens: tuple[int, ...], stops: frozenset[int]) -> tuple[int, ...]:
    """`tokens` up to and including the first stop token (nothing after an EOS can be accepted)."""
    if not stops or stops.isdisjoint(tokens):  # the common case, in C
        return tokens
    return tokens[: next(i + 1 for i, t in enumerate(tokens) if t in stops)]


def _prefixes(tokens: tuple[int, ...], longest: int) -> set[tuple[int, ...]]:
    return {tokens[:i] for i in range(1, min(len(tokens), longest) + 1)}


def _match_lengths(starts: Iterable[tuple[RefId, int]], refs: Mapping[RefId, list[int]],
                   context: Sequence[int], top: int) -> Iterator[tuple[tuple[RefId, int], int]]:
    """Each copy start (after an occurrence of the context's last token) with how many of the
    context's last tokens, up to `top`, end there."""
    for ref_id, end in starts:
        ref = refs[ref_id]
        m = 1
        while m < top and m < end and ref[end - m - 1] == context[-m - 1]:
            m += 1
        yield (ref_id, end), m


def fit_first(drafts: list[Draft], total: int) -> list[Draft]:
    """Cut the first draft so that all of them hold at most `total` tokens (no-op if they fit)."""
    room = total - sum(len(d.tokens) for d in drafts[1:])
    if len(drafts[0].tokens) > room:
        drafts[0] = replace(drafts[0], tokens=drafts[0].tokens[:room])
    return drafts


def _checked(ref_id: RefId, tokens: Iterable[int]) -> list[int]:
    tokens = list(tokens)
    if all_ints(tokens):  # the common case, in C; the loop below names the culprit
        return tokens
    bad = next((t for t in tokens if not isinstance(t, int) or isinstance(t, bool)), None)
    if bad is not None:
        raise ValueError(f"reference {ref_id!r}: token ids must be ints, got {bad!r}")
    return tokens


def _ngrams(ref: list[int], n: int, first_end: int, backwards: bool = False
            ) -> tuple[Iterable[tuple[int, ...]], range]:
    """The n-grams `ref[e - n : e]` for e in [first_end, len(ref)), with those ends (a zip of
    shifted slices); `backwards`: from the last end to the first."""
    ends = range(first_end, len(ref))
    slices = [ref[first_end - n + i : len(ref) - n + i] for i in range(n)]
    if backwards:
        return zip(*(s[::-1] for s in slices)), ends[::-1]
    return zip(*slices), ends
