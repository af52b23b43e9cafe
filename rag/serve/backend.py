"""What the server asks of a generation engine, and the one that serialises requests on one engine.

`GenerationBackend` is the seam: the HTTP layer hands it a `Generation` and reads `AnswerDelta`s
from the async iterator it returns; closing that iterator (a client gone, a stop) cancels the
generation. `ThreadedBackend` runs the generations on one `RAGPipeline` from `workers` threads
fed by one queue: one thread for the one-at-a-time engine (generations serialised), several for
the batch engine (llma.batch), which decodes the concurrent ones together.
"""
from __future__ import annotations

import asyncio
import logging
import queue
import threading
from functools import partial
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol

from llma import LLMAConfig
from rag.pipeline import RAGPipeline
from rag.types import AnswerDelta, RagSettings, SourceText

log = logging.getLogger(__name__)

Mode = Literal["chat", "text", "rag"]


@dataclass(frozen=True)
class Generation:
    """One completion to produce. `mode` "chat": `messages` through the chat template; "text": the
    raw `prompt`; "rag": the last user message answered from the index (`rag`'s settings), earlier
    messages as history. `sources`: texts the answer may copy from (the request's references and
    prediction). `stop`: stop strings (not kept in the text)."""

    mode: Mode
    config: LLMAConfig
    messages: Sequence[Mapping[str, str]] = ()
    prompt: str = ""
    sources: Sequence[SourceText] = ()
    stop: tuple[str, ...] = ()
    rag: RagSettings | None = None
    max_prompt_tokens: int | None = None


class QueueFull(RuntimeError):
    """More generations wait than the backend accepts."""


class GenerationStream(Protocol):
    """The deltas of one generation as they come, the last one (`done`) with the `Answer`. Bad
    input raises ValueError from `__anext__`. `cancel` (safe from any coroutine, any number of
    times) ends the generation: the engine stops within one forward pass and the iteration ends
    without a `done` delta."""

    def __aiter__(self) -> GenerationStream: ...

    async def __anext__(self) -> AnswerDelta: ...

    def cancel(self) -> None: ...


class GenerationBackend(Protocol):
    def stream(self, generation: Generation) -> GenerationStream:
        """Queue `generation`; `QueueFull` at once when too many wait."""
        ...

    @property
    def waiting(self) -> int:
        """Generations queued, not yet started."""
        ...

    @property
    def running(self) -> int:
        """Generations being decoded now (the batch size)."""
        ...

    @property
    def cancelled(self) -> int:
        """Generations stopped early, or never started, because they were cancelled."""
        ...

    def close(self) -> None:
        """Stop the worker(s) once the queued generations are done or cancelled."""
        ...


@dataclass(eq=False)
class _Job:
    generation: Generation
    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue[AnswerDelta | BaseException | None]
    cancelled: threading.Event = field(default_factory=threading.Event)


def deltas(pipeline: RAGPipeline, generation: Generation) -> Generator[AnswerDelta, None, None]:
    """The pipeline's deltas for `generation` (synchronous; one thread iterates). Closing the
    generator closes the pipeline's, which ends the engine's generation."""
    g = generation
    if g.mode == "chat":
        yield from pipeline.stream_chat(g.messages, g.sources, g.config, g.stop,
                                        max_prompt_tokens=g.max_prompt_tokens)
    elif g.mode == "text":
        yield from pipeline.stream_text(g.prompt, g.sources, g.config, g.stop, max_prompt_tokens=g.max_prompt_tokens)
    else:
        question, history = _split_question(g.messages)
        settings = replace(g.rag or RagSettings(use_answer_cache=False), llma=g.config, stop=g.stop)
        yield from pipeline.stream(question, history, settings, extra_sources=g.sources)


def _split_question(messages: Sequence[Mapping[str, str]]) -> tuple[str, list[Mapping[str, str]]]:
    """The last message (a user's) is the question; earlier user/assistant ones are history."""
    if not messages or messages[-1].get("role") != "user":
        raise ValueError("the llma-rag model answers the last message, which must be a user message")
    history = [m for m in messages[:-1] if m.get("role") in ("user", "assistant")]
    return str(messages[-1].get("content", "")), history


class _SerialStream:
    def __init__(self, job: _Job) -> None:
        self._job = job
        self._ended = False

    def __aiter__(self) -> _SerialStream:
        return self

    async def __anext__(self) -> AnswerDelta:
        if self._ended:
            raise StopAsyncIteration
        item = await self._job.out.get()
        if item is None or isinstance(item, BaseException):
            self._ended = True
        if item is None:
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            raise item
        return item

    def cancel(self) -> None:
        self._job.cancelled.set()  # a no-op once the job is done; else the worker drops it


class ThreadedBackend:
    """`workers` threads take the queued generations in turn and decode them on one pipeline."""

    def __init__(self, pipeline: RAGPipeline, max_queue: int = 64, workers: int = 1) -> None:
        self.pipeline = pipeline
        self.max_queue = max_queue
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._waiting = 0
        self._running = 0
        self._cancelled = 0
        self._count = threading.Lock()
        self._workers = [threading.Thread(target=self._work, name=f"llma-serve-worker-{i}", daemon=True)
                         for i in range(max(1, workers))]
        for worker in self._workers:
            worker.start()

    @property
    def waiting(self) -> int:
        return self._waiting

    @property
    def running(self) -> int:
        return self._running

    @property
    def cancelled(self) -> int:
        return self._cancelled

    def stream(self, generation: Generation) -> GenerationStream:
        with self._count:
            if self._waiting >= self.max_queue:
                raise QueueFull(f"{self._waiting} requests are waiting for the engine (the limit is "
                                f"{self.max_queue}); retry later")
            self._waiting += 1
        job = _Job(generation, asyncio.get_running_loop(), asyncio.Queue())
        self._jobs.put(job)
        return _SerialStream(job)

    def close(self) -> None:
        for _ in self._workers:
            self._jobs.put(None)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            with self._count:
                self._waiting -= 1
                if job.cancelled.is_set():
                    self._cancelled += 1
                    _send(job, None)
                    continue
                self._running += 1
            try:
                self._run(job)
            finally:
                with self._count:
                    self._running -= 1

    def _run(self, job: _Job) -> None:
        send = partial(_send, job)
        try:
            stream = deltas(self.pipeline, job.generation)
            try:
                for delta in stream:
                    if job.cancelled.is_set():
                        log.info("generation cancelled by its client")
                        with self._count:
                            self._cancelled += 1
                        break
                    send(delta)
            finally:
                stream.close()  # ends the engine's generation (rag.generation.run closes its events)
        except ValueError as err:
            send(err)
        except Exception as err:  # noqa: BLE001 -- reported to the request; the worker goes on
            log.exception("generation failed")
            send(err)
        send(None)


def _send(job: _Job, item: AnswerDelta | BaseException | None) -> None:
    """Hand `item` to the job's reader on its event loop (None: the end)."""
    try:
        job.loop.call_soon_threadsafe(job.out.put_nowait, item)
    except RuntimeError:  # the event loop is closed: nobody reads any more
        job.cancelled.set()
