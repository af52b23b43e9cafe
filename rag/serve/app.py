"""The FastAPI app: OpenAI's chat and text completions, models, health and Prometheus metrics.

`create_app(backend, ServeOptions(...))` builds it around any `GenerationBackend`; `build_app`
around a `RAGPipeline` with the serial backend. With an API key every /v1 route and /metrics ask
for `Authorization: Bearer <key>`; /health never does.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from rag.inputs import PromptTooLongError
from rag.pipeline import RAGPipeline
from rag.serve.backend import GenerationBackend, GenerationStream, QueueFull, ThreadedBackend
from rag.serve.convert import RAG_MODEL, Plan, chat_plan, completion_plan
from rag.serve.errors import ApiError, from_validation
from rag.serve.metrics import Metrics
from rag.serve.responses import ChunkWriter, chat_body, completion_body, new_id
from rag.serve.schemas import ChatCompletionRequest, CompletionRequest, Limits
from rag.types import Answer, AnswerDelta

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeOptions:
    """`model`: the plain model's id; `rag`: also serve `llma-rag` (the server has an index);
    `instance`: names this server (a replica) in every response's `x-llma-instance` header
    (default: its process id)."""

    model: str
    rag: bool = False
    api_key: str | None = None
    limits: Limits = field(default_factory=Limits)
    instance: str | None = None
    draft_defaults: dict[str, Any] | None = None  # listed with the models (a remote UI presets them)


def build_app(pipeline: RAGPipeline, api_key: str | None = None, limits: Limits = Limits(),
              model: str | None = None, instance: str | None = None) -> FastAPI:
    """The app over one pipeline through `ThreadedBackend`: `limits.max_running` generations at once
    where the engine batches (llma.batch), else one; `model` names it (default: its load name)."""
    workers = limits.max_running if pipeline.engine.concurrent else 1
    backend = ThreadedBackend(pipeline, limits.max_queue, workers)
    options = ServeOptions(model or pipeline.loaded.name, pipeline.index is not None, api_key, limits, instance,
                           asdict(pipeline.draft_defaults))
    app = create_app(backend, options)
    app.router.on_shutdown.append(backend.close)
    return app


def create_app(backend: GenerationBackend, options: ServeOptions) -> FastAPI:
    app = FastAPI(title="llma-rag", docs_url=None, redoc_url=None, openapi_url=None)
    metrics = Metrics(backend)
    models = [options.model, RAG_MODEL] if options.rag else [options.model]
    headers = {"x-llma-instance": options.instance or str(os.getpid())}
    app.state.backend, app.state.metrics = backend, metrics

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code)
        return ApiError(err.status_code, str(err.detail), code=code).response()

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, err: ApiError) -> JSONResponse:
        metrics.requests.labels(request.url.path, str(err.status)).inc()
        return err.response()

    def authorize(request: Request) -> None:
        if options.api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip().encode(), options.api_key.encode()):
            raise ApiError(401, "Incorrect API key provided.", code="invalid_api_key")

    async def body(request: Request) -> dict[str, Any]:
        """The JSON object of the body, refused (413) past the size limit before it is all read."""
        too_large = ApiError(413, f"the request body is larger than this server's limit of "
                             f"{options.limits.max_body_bytes:,} bytes", code="request_too_large")
        length = request.headers.get("content-length", "0")
        if not length.isdigit() or int(length) > options.limits.max_body_bytes:
            raise too_large
        raw = bytearray()
        async for part in request.stream():
            raw += part
            if len(raw) > options.limits.max_body_bytes:
                raise too_large
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as err:
            raise ApiError(400, f"the request body is not valid JSON: {err}", code="invalid_json") from err
        if not isinstance(data, dict):
            raise ApiError(400, "the request body must be a JSON object", code="invalid_json")
        return data

    @app.get("/health")
    async def health() -> JSONResponse:
        return JSONResponse({"status": "ok", "model": options.model, "queue": backend.waiting,
                             "running": backend.running, "instance": headers["x-llma-instance"]}, headers=headers)

    @app.get("/metrics", dependencies=[Depends(authorize)])
    async def prometheus() -> Response:
        return Response(metrics.text(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/models", dependencies=[Depends(authorize)])
    async def list_models() -> dict[str, Any]:
        created = int(time.time())
        extension = {"llma": {"draft_defaults": options.draft_defaults}} if options.draft_defaults else {}
        return {"object": "list", "data": [{"id": m, "object": "model", "created": created, "owned_by": "llma-rag",
                                            **extension} for m in models]}

    @app.post("/v1/chat/completions", dependencies=[Depends(authorize)])
    async def chat(request: Request) -> Response:
        try:
            req = ChatCompletionRequest.model_validate(await body(request))
        except ValidationError as err:
            raise from_validation(err) from err
        return await _serve(request, chat_plan(req, models, options.limits), chat=True)

    @app.post("/v1/completions", dependencies=[Depends(authorize)])
    async def completions(request: Request) -> Response:
        try:
            req = CompletionRequest.model_validate(await body(request))
        except ValidationError as err:
            raise from_validation(err) from err
        return await _serve(request, completion_plan(req, models, options.limits), chat=False)

    async def _serve(request: Request, plan: Plan, chat: bool) -> Response:
        started = time.perf_counter()
        endpoint = request.url.path
        streams = _open(backend, plan)
        watcher = asyncio.create_task(_watch_disconnect(request, streams))
        try:
            first = await _next(streams[0])
        except BaseException:
            _cancel(streams, watcher)
            raise
        if plan.stream:
            events = _sse(plan, streams, first, chat, watcher, metrics)
            metrics.requests.labels(endpoint, "200").inc()
            return StreamingResponse(_timed(events, metrics, endpoint, started), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **headers})
        try:
            answers = [await _answer(s, first if i == 0 else None) for i, s in enumerate(streams)]
        finally:
            _cancel(streams, watcher)
        for answer in answers:
            metrics.finished(answer)
        metrics.requests.labels(endpoint, "200").inc()
        metrics.latency.labels(endpoint).observe(time.perf_counter() - started)
        if chat:
            return JSONResponse(chat_body(new_id("chatcmpl"), plan.model, answers, plan.n, plan.model == RAG_MODEL),
                                headers=headers)
        return JSONResponse(completion_body(new_id("cmpl"), plan.model, answers, plan.n), headers=headers)

    return app


def _open(backend: GenerationBackend, plan: Plan) -> list[GenerationStream]:
    streams: list[GenerationStream] = []
    try:
        for generation in plan.generations:
            streams.append(backend.stream(generation))
    except QueueFull as err:
        for s in streams:
            s.cancel()
        raise ApiError(429, str(err), type_="rate_limit_error", code="queue_full") from err
    return streams


async def _next(stream: GenerationStream) -> AnswerDelta:
    """The next delta, errors as ApiErrors; bad input surfaces on the first, before any response
    is started."""
    try:
        return await stream.__anext__()
    except PromptTooLongError as err:
        raise ApiError(400, str(err), code="context_length_exceeded") from err
    except ValueError as err:
        raise ApiError(400, str(err), code="invalid_value") from err
    except StopAsyncIteration as err:
        raise ApiError(499, "the request was cancelled", code="cancelled") from err
    except Exception as err:
        raise ApiError(500, f"the generation failed: {err}", type_="server_error") from err


async def _answer(stream: GenerationStream, first: AnswerDelta | None) -> Answer:
    delta = first or await _next(stream)
    while not delta.done:
        delta = await _next(stream)
    assert delta.answer is not None  # the last delta always carries the answer
    return delta.answer


async def _watch_disconnect(request: Request, streams: list[GenerationStream]) -> None:
    """Cancel the request's generations when its client goes away."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
    log.info("client disconnected: cancelling %d generation(s)", len(streams))
    for s in streams:
        s.cancel()


def _cancel(streams: list[GenerationStream], watcher: asyncio.Task[None]) -> None:
    watcher.cancel()
    for s in streams:
        s.cancel()


def _data(obj: dict[str, Any] | str) -> str:
    return f"data: {obj if isinstance(obj, str) else json.dumps(obj, separators=(',', ':'))}\n\n"


async def _sse(plan: Plan, streams: list[GenerationStream], first: AnswerDelta, chat: bool,
               watcher: asyncio.Task[None], metrics: Metrics) -> AsyncIterator[str]:
    """The chunks of every choice in turn, the usage chunk if asked for, then [DONE]."""
    writer = ChunkWriter(plan.model, chat, plan.include_usage)
    answers: list[Answer] = []
    try:
        for index, stream in enumerate(streams):
            delta = first if index == 0 else await _next(stream)
            start = writer.start(index, delta.passages if plan.model == RAG_MODEL else None)
            if start is not None:
                yield _data(start)
            while True:
                if delta.text or delta.spans:
                    yield _data(writer.text(index, delta.text, delta.spans))
                if delta.done:
                    assert delta.answer is not None
                    answers.append(delta.answer)
                    metrics.finished(delta.answer)
                    yield _data(writer.finish(delta.answer, index))
                    break
                try:
                    delta = await stream.__anext__()
                except StopAsyncIteration:  # cancelled: the client is gone
                    return
        usage = writer.usage(answers, plan.n)
        if usage is not None:
            yield _data(usage)
        yield _data("[DONE]")
    except ApiError as err:
        yield _data(err.body())
    except Exception as err:  # noqa: BLE001 -- the status line is sent: report in the stream
        log.exception("streaming failed")
        yield _data(ApiError(500, f"the generation failed: {err}", type_="server_error").body())
    finally:
        _cancel(streams, watcher)


async def _timed(events: AsyncIterator[str], metrics: Metrics, endpoint: str, started: float) -> AsyncIterator[str]:
    async for event in events:
        yield event
    metrics.latency.labels(endpoint).observe(time.perf_counter() - started)
