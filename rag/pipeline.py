"""Retrieve, prompt, decode with LLMA: the question-answering pipeline behind the app and the CLI."""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from index import DocumentIndex, Embedder, load_index
from llma import BatchEngine, DraftDefaults, Engine, EngineOptions, LLMAConfig, LoadedModel, load_model, open_engine
from rag.cache import SessionCaches
from rag.compare import compare
from rag.generation import Request, run
from rag.inputs import (PromptTooLongError, check_history, check_messages, check_question,
                        check_reference_texts, check_session)
from rag.prompt import Prompt, Turn, build_prompt, parse_history, render
from rag.private_docs import SessionDocuments
from rag.references import TokenizedText, build_references
from rag.retrieval import NOTHING_FOUND, retrieve, retrieve_in_conversation
from rag.types import Answer, AnswerDelta, Comparison, Passage, RagSettings, SourceText

__all__ = ["RAGPipeline", "retrieve"]  # retrieve: rag.retrieval's, re-exported

log = logging.getLogger(__name__)

History = Sequence[Mapping[str, object]]


def _turn_source(turn: Turn) -> SourceText:
    what = "answer" if turn.role == "assistant" else "question"
    return SourceText(f"history:{turn.index}", "history", turn.content, f"earlier {what} (message {turn.index + 1})")


def _passage_source(passage: Passage) -> SourceText:
    return SourceText(passage.id, "passage", passage.text, passage.label)


class RAGPipeline:
    """Answers questions over a `DocumentIndex` (None: no retrieval) with one model.

    With the batch engine (llma.batch, the CPU default) concurrent callers' answers are decoded
    together, each the same as alone; with the one-at-a-time engine (one KV cache) generations are
    serialised by a lock and concurrent callers wait.

    The answer cache is private to a session: `answer`/`stream`/`prepare` take a `session` key, and
    an answer is stored in, and offered as a reference from, that session's cache only (at most
    `cache_size` answers per session, `max_sessions` sessions, least recently used dropped). With
    no session (the default) no cache is read or written: a caller serving several users cannot
    leak one user's answer to another by forgetting the key. The index is shared by every caller;
    documents uploaded with `add_document` are searched for their own session only (see
    rag.private_docs), and `forget_session` drops them with the session's cached answers.
    Retrieval (rag.retrieval) follows the conversation (a follow-up is searched with the user's
    previous questions) and keeps
    passages scoring at least `settings.min_score`; when none is kept, the answer's `notice` says so.
    """

    def __init__(self, index: DocumentIndex | None, loaded: LoadedModel, embedder: Embedder | None = None,
                 cache_size: int = 256, engine_options: EngineOptions | None = None,
                 max_sessions: int = 128) -> None:
        """`engine_options`: how the model runs (llma.options; default: the engine's own defaults)."""
        self.index = index
        self.loaded = loaded
        self.engine: Engine | BatchEngine = open_engine(loaded, engine_options)
        self.engine.warm_up()  # on a GPU: the CUDA graphs and torch.compile now, not in the first answer
        # The cache compares questions with the index's own embedder; without an index, the default.
        cache_embedder = embedder or (index.embedder if index else Embedder())
        self.caches = SessionCaches(cache_embedder, cache_size, max_sessions)
        self.uploads = SessionDocuments(cache_embedder, max_sessions)
        # Decoding: serialised only for an engine with one KV cache; retrieval and prompts: one at a time.
        self._decoding: AbstractContextManager = nullcontext() if self.engine.concurrent else threading.Lock()
        self._preparing = threading.Lock()

    @classmethod
    def from_paths(cls, index_dir: str | None, model: str | None = None, device: str | None = None,
                   dtype: str | None = None, embedder: str | None = None,
                   engine_options: EngineOptions | None = None) -> RAGPipeline:
        """`embedder` None: the one the index was built with (a different one is refused)."""
        index = load_index(index_dir, embedder) if index_dir else None
        loaded = load_model(model, device=device, dtype=dtype)
        return cls(index, loaded, Embedder(embedder) if embedder else None, engine_options=engine_options)

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        return self.loaded.tokenizer

    @property
    def draft_defaults(self) -> DraftDefaults:
        """What LLMAConfig's unset drafting fields become with this model's backend."""
        return self.engine.draft_defaults

    def _budget(self, config: LLMAConfig) -> int:
        budget = self.engine.context_length - config.max_new_tokens
        if budget < 1:
            raise ValueError(f"max_new_tokens={config.max_new_tokens} leaves no room for the prompt in the "
                             f"model's context of {self.engine.context_length} tokens")
        return budget

    def _sources(self, question: str, prompt: Prompt, settings: RagSettings,
                 session: str | None) -> list[SourceText]:
        sources = [_turn_source(t) for t in prompt.turns] if settings.use_history_refs else []
        sources += [_passage_source(p) for p in prompt.passages]
        cache = self.caches.peek(session) if settings.use_answer_cache and session is not None else None
        if cache is not None:
            hits = cache.lookup(question, settings.cache_threshold)
            sources += [SourceText(f"cache:{i}", "cache", hit.answer, f'cached answer to "{hit.question}"')
                        for i, hit in enumerate(hits)]
        return sources

    def _passages(self, question: str, turns: list[Turn], settings: RagSettings,
                  session: str | None) -> tuple[list[Passage], str]:
        """The passages for the question (shared index and the session's uploads) and the notice."""
        private = self.uploads.peek(session) if session is not None else None
        searchable = self.index is not None or (private is not None and len(private) > 0)
        if settings.top_k == 0 or not searchable:
            return [], ""
        passages = retrieve_in_conversation(self.index, question, turns, settings.query_turns,
                                            settings.top_k, settings.min_score, private)
        notice = NOTHING_FOUND.format(min_score=settings.min_score) \
            if not passages and settings.min_score is not None else ""
        return passages, notice

    def prepare(self, question: str, history: History = (), settings: RagSettings = RagSettings(),
                session: str | None = None, extra_sources: Sequence[SourceText] = ()) -> Request:
        """Retrieval, prompt and references for a question (no decoding); cached answers and
        uploads only from `session`'s own (none without a session); `extra_sources`: more texts to
        copy from (not in the prompt: a server request's own references)."""
        return self._prepare(question, history, settings, session, tuple(extra_sources))[0]

    def _prepare(self, question: str, history: History, settings: RagSettings, session: str | None,
                 extra_sources: tuple[SourceText, ...] = ()) -> tuple[Request, str]:
        question = check_question(question)
        history = check_history(history)
        session = check_session(session)
        turns = parse_history(history)
        passages, notice = self._passages(question, turns, settings, session)
        # The passage instructions only where there are passages: without any, the model answers
        # plainly (and the notice tells the reader).
        prompt = build_prompt(self.tokenizer, question, turns, passages,
                              self._budget(settings.llma), with_index=bool(passages))
        sources = self._sources(question, prompt, settings, session) + list(extra_sources)
        tokenized = TokenizedText(prompt.text, prompt.ids, prompt.offsets)
        refs = build_references(self.tokenizer, tokenized, sources, settings.refs_from_prompt)
        return Request(prompt.ids, refs, settings.llma, settings.stop, prompt.passages), notice

    def stream(self, question: str, history: History = (), settings: RagSettings = RagSettings(),
               session: str | None = None, extra_sources: Sequence[SourceText] = ()) -> Iterator[AnswerDelta]:
        """Deltas as the answer grows. With `settings.use_answer_cache` and a `session`, the
        session's earlier answers to similar questions are references and the finished answer is
        stored in that session's cache; without a session, no cache is used. An empty question or
        a bad session raises here, at once; other bad input on the first `next()`."""
        question = check_question(question)
        session = check_session(session)
        return self._stream(question, check_history(history), settings, session, tuple(extra_sources))

    def _stream(self, question: str, history: History, settings: RagSettings, session: str | None,
                extra_sources: tuple[SourceText, ...] = ()) -> Iterator[AnswerDelta]:
        with self._decoding:
            with self._preparing:
                request, notice = self._prepare(question, history, settings, session, extra_sources)
            for delta in run(self.engine, request):
                if delta.answer is not None:
                    delta.answer.notice = notice
                    if settings.use_answer_cache and session is not None:
                        self.caches.get(session).put(question, delta.answer.text)
                yield delta

    def answer(self, question: str, history: History = (), settings: RagSettings = RagSettings(),
               session: str | None = None) -> Answer:
        """The finished answer of `stream` (same contract)."""
        return _final(self.stream(question, history, settings, session))

    def forget_session(self, session: str) -> None:
        """Drop the session's cached answers and uploads (when its user leaves)."""
        self.caches.forget(session)
        self.uploads.forget(session)

    def add_document(self, session: str, path: Path | str, name: str,
                     on_progress: Callable[[int, int], None] | None = None) -> int:
        """Index the file at `path` as `name` for `session` only (a name given again replaces its
        document); its number of chunks. IndexingError, with the reason, for an unusable file."""
        session = check_session(session)
        if session is None:
            raise ValueError("an upload needs a session: it is searchable in that session only")
        return self.uploads.get(session).add_file(path, name, on_progress=on_progress)

    def remove_document(self, session: str, name: str) -> bool:
        """Drop the session's upload `name`; False when it has none of that name."""
        private = self.uploads.peek(check_session(session) or "")
        return private.remove(name) if private is not None else False

    def documents(self, session: str | None) -> dict[str, int]:
        """The session's uploads: name -> chunks, in upload order."""
        private = self.uploads.peek(session) if session else None
        return private.chunk_counts() if private is not None else {}

    def compare_with_greedy(self, question: str, history: History = (),
                            settings: RagSettings = RagSettings(), repeats: int = 3,
                            session: str | None = None) -> Comparison:
        """LLMA as set against plain greedy decoding (proposer off) on the same prompt and the same
        references, never the answer cache (`session` only adds its uploads to the retrieval);
        warmed up, `repeats` alternating pairs, the median speedup and its spread
        (`rag.compare.compare`). Bad input raises before any decoding."""
        question = check_question(question)
        history = check_history(history)
        session = check_session(session)
        return compare(lambda s: self.answer(question, history, s, session), settings, repeats)

    def stream_messages(self, messages: Sequence[Mapping[str, str]], references: Sequence[str] = (),
                        config: LLMAConfig = LLMAConfig(), stop: Sequence[str] = (),
                        refs_from_prompt: bool = True) -> Iterator[AnswerDelta]:
        """Generate for ready chat messages with the chat template, copying from `references`
        (ids "reference:<i>"); for the LangChain model."""
        texts = check_reference_texts(references, config.max_reference_tokens)
        sources = [SourceText(f"reference:{i}", "reference", t, f"reference {i + 1}") for i, t in enumerate(texts)]
        return self.stream_chat(messages, sources, config, stop, refs_from_prompt)

    def stream_chat(self, messages: Sequence[Mapping[str, str]], sources: Sequence[SourceText] = (),
                    config: LLMAConfig = LLMAConfig(), stop: Sequence[str] = (), refs_from_prompt: bool = True,
                    max_prompt_tokens: int | None = None) -> Iterator[AnswerDelta]:
        """`stream_messages` with the references given as sources (their ids are the reference ids
        that spans and `stats["drafts_by_source"]` name); a prompt longer than `max_prompt_tokens`
        tokens is refused (ValueError, on the first `next()`)."""
        checked = check_messages(messages)
        check_reference_texts([s.text for s in sources], config.max_reference_tokens)
        stops = _check_stop(stop)
        return self._stream_rendered(lambda: render(self.tokenizer, checked), list(sources), config, stops,
                                     refs_from_prompt, max_prompt_tokens)

    def stream_text(self, text: str, sources: Sequence[SourceText] = (), config: LLMAConfig = LLMAConfig(),
                    stop: Sequence[str] = (), refs_from_prompt: bool = True,
                    max_prompt_tokens: int | None = None) -> Iterator[AnswerDelta]:
        """`stream_chat` for a raw text prompt (no chat template): plain completion."""
        if not isinstance(text, str) or not text:
            raise ValueError("the prompt must be a non-empty text")
        check_reference_texts([s.text for s in sources], config.max_reference_tokens)
        stops = _check_stop(stop)

        def tokenize() -> tuple[str, list[int], list[tuple[int, int]]]:
            encoded = self.tokenizer(text, return_offsets_mapping=True)
            return text, list(encoded["input_ids"]), [tuple(o) for o in encoded["offset_mapping"]]

        return self._stream_rendered(tokenize, list(sources), config, stops, refs_from_prompt, max_prompt_tokens)

    def _stream_rendered(self, tokenized: Callable[[], tuple[str, list[int], list[tuple[int, int]]]],
                         sources: list[SourceText], config: LLMAConfig, stop: tuple[str, ...],
                         refs_from_prompt: bool, max_prompt_tokens: int | None) -> Iterator[AnswerDelta]:
        with self._decoding:
            text, ids, offsets = tokenized()
            budget = self._budget(config)
            if max_prompt_tokens is not None and len(ids) > max_prompt_tokens:
                raise PromptTooLongError(f"the prompt has {len(ids)} tokens, more than this server's limit of "
                                 f"{max_prompt_tokens}")
            if len(ids) > budget:
                raise PromptTooLongError(f"the prompt has {len(ids)} tokens but only {budget} fit "
                                 "(the model's context minus max_new_tokens)")
            refs = build_references(self.tokenizer, TokenizedText(text, ids, offsets), sources, refs_from_prompt)
            yield from run(self.engine, Request(ids, refs, config, stop))


def _check_stop(stop: Sequence[str]) -> tuple[str, ...]:
    if isinstance(stop, (str, bytes)) or not all(isinstance(s, str) and s for s in stop):
        raise ValueError("stop must be a list of non-empty strings")
    return tuple(stop)


def _final(deltas: Iterator[AnswerDelta]) -> Answer:
    answer = None
    for delta in deltas:
        answer = delta.answer or answer
    if answer is None:  # the generator always ends with a final delta; this guards a broken engine
        raise RuntimeError("the generation ended without a final answer")
    return answer
