"""OpenAI request bodies -> `Generation`s for the backend: decoding settings, references, limits.

The prediction becomes the reference "prediction", a request's references "reference:<id>": the
ids the response's spans and `drafts_by_source` name. Temperature left out means 0 (greedy, where
LLMA's output is bit-identical to plain decoding); `n` choices with a seed use seed, seed+1, ...
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from llma import LLMAConfig
from rag.serve.backend import Generation, Mode
from rag.serve.errors import ApiError
from rag.serve.schemas import ChatCompletionRequest, CompletionRequest, Limits
from rag.types import RagSettings, SourceText

RAG_MODEL = "llma-rag"
PREDICTION_ID = "prediction"
_ROLE = {"developer": "system"}


@dataclass(frozen=True)
class Plan:
    """What one HTTP request asks for: its generations (per prompt, `n` each) and how to answer."""

    model: str
    generations: list[Generation]
    n: int
    stream: bool
    include_usage: bool
    has_prediction: bool


def _refuse_unsupported(req: ChatCompletionRequest | CompletionRequest) -> None:
    if req.tools or req.functions:
        raise ApiError(400, "tools and functions are not supported by this server", param="tools",
                       code="unsupported_parameter")
    if req.logprobs not in (None, False, 0):
        raise ApiError(400, "logprobs are not supported by this server", param="logprobs",
                       code="unsupported_parameter")
    fmt = req.response_format
    if fmt is not None and not (isinstance(fmt, dict) and fmt.get("type") == "text"):
        raise ApiError(400, "only response_format {'type': 'text'} is supported", param="response_format",
                       code="unsupported_parameter")


def _config(req: ChatCompletionRequest | CompletionRequest, limits: Limits, default_tokens: int) -> LLMAConfig:
    max_tokens = req.token_limit() or min(default_tokens, limits.max_tokens)
    newer = isinstance(req, ChatCompletionRequest) and req.max_completion_tokens is not None
    param = "max_completion_tokens" if newer else "max_tokens"
    if max_tokens > limits.max_tokens:
        raise ApiError(400, f"{param} is {max_tokens}, more than this server's limit of {limits.max_tokens}",
                       param=param, code="invalid_value")
    fields: dict[str, object] = {"max_new_tokens": max_tokens, "temperature": req.temperature or 0.0}
    if req.top_p is not None:
        fields["top_p"] = req.top_p
    if req.seed is not None:
        fields["seed"] = req.seed
    if req.llma:
        fields.update(req.llma.model_dump(exclude_none=True))
    try:
        config = LLMAConfig(**fields)  # type: ignore[arg-type]
    except ValueError as err:
        raise ApiError(400, f"invalid decoding settings: {err}", param="llma", code="invalid_value") from err
    return config.greedy() if req.llma is False else config


def _sources(req: ChatCompletionRequest | CompletionRequest, limits: Limits) -> list[SourceText]:
    refs = req.references or []
    if len(refs) > limits.max_references:
        raise ApiError(400, f"{len(refs)} references, more than this server's limit of {limits.max_references}",
                       param="references", code="invalid_value")
    ids = [r.id for r in refs]
    if len(set(ids)) != len(ids):
        raise ApiError(400, "reference ids must be unique", param="references", code="invalid_value")
    sources = [SourceText(f"reference:{r.id}", "reference", r.text, r.id) for r in refs if r.text]
    if req.prediction is not None and req.prediction.text():
        sources.append(SourceText(PREDICTION_ID, "reference", req.prediction.text(), "prediction"))
    chars = sum(len(s.text) for s in sources)
    if chars > limits.max_reference_chars:
        param = "prediction" if req.prediction is not None and not refs else "references"
        raise ApiError(413, f"the references and prediction hold {chars:,} characters, more than this "
                       f"server's limit of {limits.max_reference_chars:,}", param=param, code="request_too_large")
    return sources


def _common(req: ChatCompletionRequest | CompletionRequest, models: list[str], limits: Limits) -> None:
    if req.model not in models:
        raise ApiError(404, f"The model '{req.model}' does not exist; this server has {', '.join(models)}",
                       param="model", code="model_not_found")
    _refuse_unsupported(req)
    if req.n > limits.max_n:
        raise ApiError(400, f"n is {req.n}, more than this server's limit of {limits.max_n}", param="n",
                       code="invalid_value")
    if req.stop and len(req.stop) > limits.max_stop:
        raise ApiError(400, f"at most {limits.max_stop} stop strings", param="stop", code="invalid_value")


def _rag_settings(req: ChatCompletionRequest) -> RagSettings:
    """The retrieval settings of an llma-rag request: the pipeline's, with the `rag` extension's
    over them; never the answer cache (a server's callers must not see each other's answers)."""
    given = req.rag.model_dump(exclude_none=True) if req.rag else {}
    try:
        return RagSettings(use_answer_cache=False, **given)
    except ValueError as err:
        raise ApiError(400, f"invalid retrieval settings: {err}", param="rag", code="invalid_value") from err


def _choices(mode: Mode, req: ChatCompletionRequest | CompletionRequest, config: LLMAConfig,
             sources: list[SourceText], limits: Limits, messages: list[dict[str, str]] = (),  # type: ignore[assignment]
             prompt: str = "") -> list[Generation]:
    rag = _rag_settings(req) if mode == "rag" and isinstance(req, ChatCompletionRequest) else None
    out = []
    for i in range(req.n):
        seeded = replace(config, seed=config.seed + i) if config.seed is not None and i else config
        out.append(Generation(mode, seeded, messages, prompt, tuple(sources), tuple(req.stop or ()), rag,
                              limits.max_prompt_tokens))
    return out


def chat_plan(req: ChatCompletionRequest, models: list[str], limits: Limits) -> Plan:
    _common(req, models, limits)
    messages = [{"role": _ROLE.get(m.role, m.role), "content": m.text()} for m in req.messages]
    mode: Mode = "rag" if req.model == RAG_MODEL else "chat"
    config = _config(req, limits, limits.default_max_tokens)
    generations = _choices(mode, req, config, _sources(req, limits), limits, messages=messages)
    return Plan(req.model, generations, req.n, req.stream, bool(req.stream_options and req.stream_options.include_usage),
                req.prediction is not None)


def completion_plan(req: CompletionRequest, models: list[str], limits: Limits) -> Plan:
    _common(req, models, limits)
    if req.model == RAG_MODEL:
        raise ApiError(400, f"{RAG_MODEL} answers chat messages: use /v1/chat/completions", param="model",
                       code="invalid_value")
    if req.echo or req.suffix:
        raise ApiError(400, "echo and suffix are not supported by this server", param="echo" if req.echo else "suffix",
                       code="unsupported_parameter")
    prompts = req.prompts()
    if not prompts or any(not p for p in prompts):
        raise ApiError(400, "prompt must be a non-empty text or list of non-empty texts", param="prompt",
                       code="invalid_value")
    config = _config(req, limits, 16)  # OpenAI's default for text completions
    sources = _sources(req, limits)
    generations = [g for p in prompts for g in _choices("text", req, config, sources, limits, prompt=p)]
    return Plan(req.model, generations, req.n, req.stream, bool(req.stream_options and req.stream_options.include_usage),
                req.prediction is not None)
