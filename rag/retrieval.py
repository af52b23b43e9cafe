"""Retrieval: which passages the model is given for a question.

- The query follows the conversation (`retrieve_in_conversation`): a question that finds a passage
  scoring at least `STANDALONE_SCORE` on its own is searched alone (a new subject is not mixed
  with the old one); otherwise (a follow-up such as "tell me more about it" or "what did I just
  ask you?" has no subject of its own) it is searched together with the user's previous
  questions, the most recent first (`conversation_query`). Measured against always searching the
  question alone, always with the conversation, and blends of the two in
  benchmarks/results/followup_query.json: the only rule that finds the follow-ups' passages as
  often as the first question's own and never brings the old subject into a new one.
- The operator's index (shared by every user) and the session's private uploads are searched with
  the same query vector and merged by score.
- Passages scoring under `min_score` are dropped (`RagSettings.min_score`, default
  `DEFAULT_MIN_SCORE`, measured in benchmarks/results/min_score.json): an unrelated passage only
  misleads a small model. When none is left, the answer says so (`NOTHING_FOUND`).
"""
from __future__ import annotations

from collections.abc import Sequence

from index import DocumentIndex, Embedder, MemoryIndex, SearchHit
from rag.prompt import Turn
from rag.types import DEFAULT_MIN_SCORE, Passage

NOTHING_FOUND = ("No passage of the documents scored {min_score:.2f} or more for this question, so "
                 "none was given to the model: this answer is the model's own, not from the documents.")

STANDALONE_SCORE = 0.5
TURN_CHARS = 1000  # an earlier question's share of the query (the embedder reads 256 tokens)

__all__ = ["DEFAULT_MIN_SCORE", "NOTHING_FOUND", "STANDALONE_SCORE", "conversation_query", "retrieve",
           "retrieve_hits", "retrieve_in_conversation"]


def conversation_query(question: str, turns: Sequence[Turn], previous: int) -> str:
    """The retrieval query: `question`, then up to `previous` earlier user questions, the most
    recent first, one per line, each cut to `TURN_CHARS` characters. The question leads, so where
    the embedder truncates a long query it is the oldest turns that are cut."""
    asked = [t.content.strip()[:TURN_CHARS] for t in turns if t.role == "user" and t.content.strip()]
    earlier = list(reversed(asked))[:previous] if previous > 0 else []
    return "\n".join([question.strip(), *earlier])


def retrieve_hits(query: str, embedder: Embedder, k: int, min_score: float | None,
                  index: DocumentIndex | None = None,
                  private: MemoryIndex | None = None) -> list[tuple[SearchHit, bool]]:
    """The k best chunks of the shared `index` and the session's `private` uploads together, best
    first (ties: the shared index first), each scoring at least `min_score`, with True for a
    private one."""
    if k <= 0 or (index is None and (private is None or not len(private))):
        return []
    vector = embedder.embed([query])[0]
    hits = [(h, False) for h in index.search_vector(vector, k, min_score)] \
        if index is not None and len(index) else []
    if private is not None:
        hits += [(h, True) for h in private.search_vector(vector, k, min_score)]
    return sorted(hits, key=lambda pair: -pair[0].score)[:k]


def retrieve(index: DocumentIndex | None, question: str, k: int, min_score: float | None,
             private: MemoryIndex | None = None) -> list[Passage]:
    """The top-k chunks for `question` (already the retrieval query) as numbered passages, best
    first; an upload's source is written "upload: <name>"."""
    if not question.strip():
        raise ValueError("the search query is empty: give some words to search for")
    embedder = index.embedder if index is not None else private.embedder if private is not None else None
    if embedder is None:
        return []
    passages = []
    for n, (hit, is_private) in enumerate(retrieve_hits(question, embedder, k, min_score, index, private), 1):
        source = f"upload: {hit.chunk.source}" if is_private else hit.chunk.source
        passages.append(Passage(id=f"passage:{n}", number=n, text=hit.chunk.text.strip(), source=source,
                                title=hit.chunk.title or hit.chunk.source, score=hit.score,
                                chunk_id=hit.chunk.id))
    return passages


def retrieve_in_conversation(index: DocumentIndex | None, question: str, turns: Sequence[Turn],
                             previous: int, k: int, min_score: float | None,
                             private: MemoryIndex | None = None) -> list[Passage]:
    """`retrieve` for `question` alone if that finds a passage scoring `STANDALONE_SCORE` or more
    (or there is no earlier user question, or `previous` is 0); else for `conversation_query`."""
    passages = retrieve(index, question, k, min_score, private)
    if passages and passages[0].score >= STANDALONE_SCORE:
        return passages
    query = conversation_query(question, turns, previous)
    return retrieve(index, query, k, min_score, private) if query != question.strip() else passages
