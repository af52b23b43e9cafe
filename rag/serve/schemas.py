"""The OpenAI request bodies the server takes, as pydantic models, and the server's limits.

Fields OpenAI defines that the server does not act on are ignored (`extra="ignore"`), as OpenAI
ignores unknown ones; a few it cannot honour (tools, logprobs, a JSON response format) are refused
by `rag.serve.convert`, so a client never gets an answer that silently lacks what it asked for.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


@dataclass(frozen=True)
class Limits:
    """Bounds on one request; a request over any gets a 4xx naming the limit."""

    max_body_bytes: int = 2_000_000
    max_prompt_tokens: int = 4096
    max_tokens: int = 1024
    default_max_tokens: int = 256
    max_n: int = 8
    max_stop: int = 4
    max_references: int = 16
    max_reference_chars: int = 200_000  # all references and the prediction together
    max_queue: int = 64  # requests waiting for the engine; more get 429
    max_running: int = 8  # generations decoded at once by a batch engine (one-at-a-time engine: 1)


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class Prediction(BaseModel):
    """OpenAI's Predicted Outputs: text the answer is expected to repeat (an LLMA reference)."""

    model_config = ConfigDict(extra="ignore")
    type: Literal["content"]
    content: str | list[TextPart]

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ReferenceIn(BaseModel):
    """An extension: a document the answer may copy from (`extra_body={"references": [...]}`)."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, max_length=128)
    text: str


class LLMAOptions(BaseModel):
    """An extension: LLMA's drafting settings (`extra_body={"llma": {...}}`; `false` turns it off)."""

    model_config = ConfigDict(extra="forbid")
    # Bounded: the n-gram index grows with max_n, and drafts longer than 256 tokens gain nothing.
    min_n: int | None = Field(default=None, ge=1, le=16)
    max_n: int | None = Field(default=None, ge=1, le=16)
    k: int | None = Field(default=None, ge=1, le=256)
    adaptive: bool | None = None
    k_max: int | None = Field(default=None, ge=1, le=256)
    policy: Literal["recent", "first", "longest"] | None = None
    copy_from_output: bool | None = None
    answer_history: bool | None = None


class RagOptions(BaseModel):
    """An extension for `llma-rag`: retrieval settings (`extra_body={"rag": {...}}`)."""

    model_config = ConfigDict(extra="forbid")
    top_k: int | None = Field(default=None, ge=0, le=32)
    min_score: float | None = None
    use_history_refs: bool | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class _Sampling(BaseModel):
    """What chat and text completions share."""

    model_config = ConfigDict(extra="ignore")
    model: str = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    stop: str | list[str] | None = None
    n: int = Field(default=1, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    prediction: Prediction | None = None
    references: list[ReferenceIn] | None = None
    llma: LLMAOptions | Literal[False] | None = None
    logprobs: Any = None
    tools: Any = None
    functions: Any = None
    response_format: Any = None

    @field_validator("stop")
    @classmethod
    def _stop(cls, value: str | list[str] | None) -> list[str] | None:
        if value is None:
            return None
        stops = [value] if isinstance(value, str) else value
        if any(not s or len(s) > 256 for s in stops):
            raise ValueError("stop strings must be 1 to 256 characters long")
        return stops


class ChatCompletionRequest(_Sampling):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    rag: RagOptions | None = None

    def token_limit(self) -> int | None:
        """OpenAI's newer name wins over the deprecated `max_tokens`."""
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class CompletionRequest(_Sampling):
    prompt: str | list[str]
    echo: bool = False
    suffix: str | None = None

    def token_limit(self) -> int | None:
        return self.max_tokens

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)
