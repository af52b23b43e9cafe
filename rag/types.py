"""Dataclasses that cross the package boundary: settings, passages, spans, answers, deltas."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from llma import LLMAConfig
from llma.checks import check_finite, check_int

SourceKind = Literal["passage", "history", "cache", "reference", "output"]
# Passages scoring lower are not given to the model (cosine similarity, all-MiniLM-L6-v2); measured
# on the demo documents and SQuAD v1.1 dev: benchmarks/results/min_score.json (rag/retrieval.py).
DEFAULT_MIN_SCORE = 0.3


@dataclass(frozen=True)
class RagSettings:
    """Per-question settings.

    `top_k` 0 turns retrieval off. Passages scoring under `min_score` are dropped (None: none is).
    `query_turns`: how many earlier user questions join the question in the retrieval query
    (rag.retrieval.conversation_query; 0: the question alone). `refs_from_prompt` takes each reference's token ids from the
    prompt's own tokenization (a passage tokenized alone splits differently at its edges, so the
    model's output would match it less often). `stop` holds stop strings, applied to decoded text.
    """

    top_k: int = 4
    min_score: float | None = DEFAULT_MIN_SCORE
    query_turns: int = 2
    llma: LLMAConfig = field(default_factory=LLMAConfig)
    use_history_refs: bool = True
    use_answer_cache: bool = True
    cache_threshold: float = 0.8
    refs_from_prompt: bool = True
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_int("top_k", self.top_k, 0)
        check_int("query_turns", self.query_turns, 0)
        if self.min_score is not None:
            check_finite("min_score", self.min_score)
        check_finite("cache_threshold", self.cache_threshold)
        if not -1.0 <= self.cache_threshold <= 1.0:
            raise ValueError(f"cache_threshold is a cosine similarity in [-1, 1], got {self.cache_threshold}")
        if not isinstance(self.llma, LLMAConfig):
            raise ValueError(f"llma must be an LLMAConfig, got {type(self.llma).__name__}")
        if isinstance(self.stop, (str, bytes)) or not all(isinstance(s, str) and s for s in self.stop):
            raise ValueError(f"stop must be a tuple of non-empty strings, got {self.stop!r}")
        object.__setattr__(self, "stop", tuple(self.stop))  # frozen: a list given is stored as a tuple


@dataclass(frozen=True)
class Passage:
    """A retrieved chunk as shown in the prompt: `[number] title` then `text`."""

    id: str  # "passage:<number>"
    number: int  # 1-based, as numbered in the prompt
    text: str
    source: str
    title: str
    score: float
    chunk_id: str

    @property
    def label(self) -> str:
        return f"[{self.number}] {self.title}"


@dataclass(frozen=True)
class SourceText:
    """Any text the answer may copy from: a passage, an earlier turn, a cached answer."""

    id: str  # "passage:2", "history:1", "cache:0", "reference:0"
    kind: SourceKind
    text: str
    label: str


@dataclass(frozen=True)
class TextSpan:
    """Answer text copied from a source: `answer[start:end] == source_text[source_start:source_end]`.
    Kind "output" (id "output"): copied from the answer's own earlier text, so the source text is
    the answer itself."""

    start: int
    end: int
    source_kind: SourceKind
    source_id: str
    source_start: int
    source_end: int
    label: str


@dataclass
class Answer:
    """A finished answer. `stats` is `DecodeStats.as_dict()` plus "prompt_tokens", "references" and
    "drafts_by_source" (reference id -> {"proposed", "accepted"} drafted tokens); `steps` has one
    dict per decoder step (proposed, accepted, new_tokens, step_s, and `source`: the kind of text
    its accepted tokens were copied from, a SourceKind, "blank" when they are only spaces or line
    breaks (no span: nothing to highlight), None when it copied nothing); `sources` maps every reference
    id to its text (passages, earlier turns, cached answers), so spans can be shown in context.
    `notice`: what the reader should know about how the answer was made (empty, or that no
    passage was relevant enough to be given to the model)."""

    text: str
    spans: list[TextSpan]
    passages: list[Passage]
    stats: dict[str, object]
    steps: list[dict[str, float | int]]
    stop_reason: str
    tokens: list[int] = field(default_factory=list)
    sources: dict[str, SourceText] = field(default_factory=dict)
    notice: str = ""


@dataclass
class AnswerDelta:
    """One streaming step.

    `text` is the text added since the previous delta (possibly empty: text that may still turn into
    a multi-byte character or a stop string is held back). `spans` lists the spans, in answer
    character offsets over the whole answer so far, that are new or have grown since the previous
    delta: a span that grew is sent again whole, with the same `start`, and replaces the earlier one.
    Spans only ever cover text already sent. `passages` is set on the first delta only; `answer` on
    the last one (`done=True`), and its `spans` are the final, complete list.
    """

    text: str
    spans: list[TextSpan] = field(default_factory=list)
    passages: list[Passage] | None = None
    done: bool = False
    answer: Answer | None = None


@dataclass
class Comparison:
    """The same question answered with LLMA and with plain greedy decoding, same references.

    `speedups` holds greedy wall time / LLMA wall time of each measured pair, in run order;
    `speedup` is their median, `speedup_min` and `speedup_max` the spread. `llma` and `greedy` are
    the answers of the median pair. `identical`: every run gave the same token ids.
    """

    llma: Answer
    greedy: Answer
    speedup: float
    identical: bool
    speedups: list[float] = field(default_factory=list)

    @property
    def repeats(self) -> int:
        return len(self.speedups)

    @property
    def speedup_min(self) -> float:
        return min(self.speedups, default=self.speedup)

    @property
    def speedup_max(self) -> float:
        return max(self.speedups, default=self.speedup)
