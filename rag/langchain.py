"""LangChain (langchain-core) bindings: a chat model backed by the LLMA engine, a retriever over
our index, and a ready retrieval chain that also hands the retrieved passages to LLMA.

    model = LLMAChatModel(pipeline=pipe)
    model.invoke("What is a context manager?", references=["A context manager is ..."])
    make_chain(IndexRetriever(index=pipe.index), model).invoke("What does with do?")
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel, LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable, RunnableLambda, RunnableParallel, RunnablePassthrough
from pydantic import ConfigDict, Field, model_validator

from index import DocumentIndex
from llma import LLMAConfig
from rag.chat_settings import (PROVIDER, SETTINGS, check_call, check_model, check_stop, chosen,
                                decoding_config)
from rag.inputs import check_question
from rag.pipeline import RAGPipeline
from rag.prompt import SYSTEM_WITH_PASSAGES, passage_block
from rag.types import Answer, AnswerDelta

_ROLES = {"system": "system", "human": "user", "ai": "assistant"}


def _text(content: str | list[Any]) -> str:
    if isinstance(content, str):
        return content
    return "".join(b if isinstance(b, str) else str(b.get("text", "")) for b in content
                   if isinstance(b, str) or b.get("type") == "text")


def to_chat(messages: Sequence[BaseMessage]) -> list[dict[str, str]]:
    """LangChain messages as chat-template messages; tool and function messages are refused."""
    chat = []
    for message in messages:
        if message.type not in _ROLES:
            raise ValueError(f"LLMAChatModel takes system, human and ai messages, not {message.type!r}")
        chat.append({"role": _ROLES[message.type], "content": _text(message.content)})
    return chat


def _metadata(answer: Answer, model_name: str) -> dict[str, Any]:
    return {"model_name": model_name, "model_provider": PROVIDER, "stop_reason": answer.stop_reason,
            "llma_stats": answer.stats, "copied_spans": [[s.start, s.end, s.source_id] for s in answer.spans]}


def _usage(answer: Answer) -> UsageMetadata:
    prompt = int(answer.stats["prompt_tokens"])
    out = int(answer.stats["tokens"])
    return UsageMetadata(input_tokens=prompt, output_tokens=out, total_tokens=prompt + out)


class LLMAChatModel(BaseChatModel):
    """A chat model decoding with LLMA. Pass reference texts per call: `invoke(msgs, references=[...])`.

    LangChain's standard parameters set the engine's decoding settings (`llma`, an `LLMAConfig`):
    `max_tokens` its `max_new_tokens`; `temperature`, `top_p`, `top_k`, `seed`, `frequency_penalty`
    and `presence_penalty` (OpenAI's) and `repetition_penalty` (Hugging Face's) the fields of the
    same names (temperature 0: greedy). Left at None, a parameter keeps `llma`'s value. `stop` holds
    stop strings: the reply ends before the first one (which is not kept). The same names given per
    call (`invoke(msgs, max_tokens=5)`, `bind(...)`) override the model's for that call; a per-call
    `stop` replaces the model's list. `model` is the name the pipeline's model was loaded by (None:
    that name); another name is refused, at construction and per call: one pipeline, one model.
    Unknown arguments are refused: at construction with pydantic's `ValidationError`, per call with
    `TypeError`. Bad values raise at construction, or per call before decoding.

    Decoding statistics go in `response_metadata["llma_stats"]` and in `generation_info`. Streamed
    chunks carry them on the last chunk only, so chunk merging never meets two different values.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    pipeline: RAGPipeline
    llma: LLMAConfig = Field(default_factory=LLMAConfig)
    model: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    repetition_penalty: float | None = None
    stop: list[str] | None = None
    streaming: bool = False
    """True: `invoke` decodes through `_stream`, calling back per token; the reply is the same."""

    @model_validator(mode="after")
    def _check_settings(self) -> LLMAChatModel:
        if self.model is None:
            self.model = self.pipeline.loaded.name
        check_model(self.model, self.pipeline.loaded.name)
        if self.stop is not None:
            check_stop(self.stop)
        decoding_config({}, self._settings(), self.llma)  # bad values fail here, not in the first call
        return self

    @property
    def _llm_type(self) -> str:
        return PROVIDER

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.model, "llma": repr(self.llma), "stop": self.stop, **self._settings()}

    def _settings(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in SETTINGS}

    def _stops(self, stop: list[str] | None) -> tuple[str, ...]:
        """The call's stop strings (checked), else the model's."""
        return check_stop(stop) if stop is not None else tuple(self.stop or ())

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        """Tracing parameters: the model's name (a per-call `model` first), and the temperature,
        token limit and stop strings that the call decodes with (as asked: not checked here)."""
        model = kwargs.get("model")
        params = LangSmithParams(ls_provider=PROVIDER, ls_model_type="chat",
                                 ls_model_name=model if isinstance(model, str) else str(self.model),
                                 ls_temperature=chosen("temperature", kwargs, self._settings(), self.llma),
                                 ls_max_tokens=chosen("max_tokens", kwargs, self._settings(), self.llma))
        stops = stop if stop is not None else self.stop
        if stops:
            params["ls_stop"] = [stops] if isinstance(stops, str) else list(stops)
        return params

    def _deltas(self, messages: list[BaseMessage], stop: list[str] | None,
                **kwargs: Any) -> Iterator[AnswerDelta]:
        check_call(kwargs)
        if kwargs.get("model") is not None:
            check_model(kwargs["model"], self.pipeline.loaded.name)
        config = decoding_config(kwargs, self._settings(), self.llma)
        references = kwargs.get("references") or ()
        if isinstance(references, str):
            references = [references]
        return self.pipeline.stream_messages(to_chat(messages), list(references), config, self._stops(stop))

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        answer = None
        for delta in self._deltas(messages, stop, **kwargs):
            answer = delta.answer or answer
        assert answer is not None  # the last delta always carries the answer
        info = _metadata(answer, str(self.model))
        message = AIMessage(content=answer.text, response_metadata=info, usage_metadata=_usage(answer))
        return ChatResult(generations=[ChatGeneration(message=message, generation_info=info)])

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None,
                **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        for delta in self._deltas(messages, stop, **kwargs):
            if delta.answer is None:
                if not delta.text:
                    continue
                chunk = ChatGenerationChunk(message=AIMessageChunk(content=delta.text))
            else:
                info = _metadata(delta.answer, str(self.model))
                chunk = ChatGenerationChunk(
                    message=AIMessageChunk(content=delta.text, response_metadata=info,
                                           usage_metadata=_usage(delta.answer), chunk_position="last"),
                    generation_info=info)
            if run_manager is not None:
                run_manager.on_llm_new_token(delta.text, chunk=chunk)
            yield chunk


class IndexRetriever(BaseRetriever):
    """Our `DocumentIndex` as a LangChain retriever; scores and ids go in the metadata."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    index: DocumentIndex
    k: int = 4
    min_score: float | None = None

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        return [Document(page_content=hit.chunk.text.strip(),
                         metadata={"source": hit.chunk.source, "title": hit.chunk.title,
                                   "score": hit.score, "chunk_id": hit.chunk.id})
                for hit in self.index.search(query, k=self.k, min_score=self.min_score)]


PROMPT = ChatPromptTemplate.from_messages(
    [("system", SYSTEM_WITH_PASSAGES), ("human", "Passages:\n\n{context}\n\nQuestion: {question}")])


def format_documents(docs: Sequence[Document]) -> str:
    return "\n\n".join(passage_block(n, d.metadata.get("title") or d.metadata.get("source", ""), d.page_content)
                       for n, d in enumerate(docs, start=1))


def make_chain(retriever: BaseRetriever, model: LLMAChatModel) -> Runnable[str, AIMessage]:
    """question -> retriever -> prompt -> model, with the retrieved passages as LLMA references."""

    def answer_step(inputs: dict[str, Any]) -> Runnable:
        # Returning a runnable makes LCEL run it on the same input, streaming included.
        references = [doc.page_content for doc in inputs["docs"]]
        to_prompt = RunnableLambda(lambda x: {"context": format_documents(x["docs"]), "question": x["question"]})
        return to_prompt | PROMPT | model.bind(references=references)

    # The question is checked (and cleaned) before retrieval: an empty one fails at once.
    return (RunnableLambda(check_question) | RunnableParallel(docs=retriever, question=RunnablePassthrough())
            | RunnableLambda(answer_step))
