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
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable, RunnableLambda, RunnableParallel, RunnablePassthrough
from pydantic import ConfigDict, Field

from index import DocumentIndex
from llma import LLMAConfig
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


def _metadata(answer: Answer) -> dict[str, Any]:
    return {"model_name": "llma", "stop_reason": answer.stop_reason, "llma_stats": answer.stats,
            "copied_spans": [[s.start, s.end, s.source_id] for s in answer.spans]}


def _usage(answer: Answer) -> UsageMetadata:
    prompt, out = int(answer.stats["prompt_tokens"]), int(answer.stats["tokens"])
    return UsageMetadata(input_tokens=prompt, output_tokens=out, total_tokens=prompt + out)


class LLMAChatModel(BaseChatModel):
    """A chat model decoding with LLMA. Pass reference texts per call: `invoke(msgs, references=[...])`.

    Decoding statistics go in `response_metadata["llma_stats"]` and in `generation_info`. Streamed
    chunks carry them on the last chunk only, so chunk merging never meets two different values.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    pipeline: RAGPipeline
    llma: LLMAConfig = Field(default_factory=LLMAConfig)

    @property
    def _llm_type(self) -> str:
        return "llma"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.pipeline.loaded.name, "llma": repr(self.llma)}

    def _deltas(self, messages: list[BaseMessage], stop: list[str] | None, **kwargs: Any) -> Iterator[AnswerDelta]:
        references = kwargs.get("references") or ()
        if isinstance(references, str):
            references = [references]
        return self.pipeline.stream_messages(to_chat(messages), list(references), self.llma, stop or ())

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        answer = None
        for delta in self._deltas(messages, stop, **kwargs):
            answer = delta.answer or answer
        assert answer is not None  # the last delta always carries the answer
        message = AIMessage(content=answer.text, response_metadata=_metadata(answer), usage_metadata=_usage(answer))
        return ChatResult(generations=[ChatGeneration(message=message, generation_info=_metadata(answer))])

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        for delta in self._deltas(messages, stop, **kwargs):
            if delta.answer is None:
                if not delta.text:
                    continue
                chunk = ChatGenerationChunk(message=AIMessageChunk(content=delta.text))
            else:
                info = _metadata(delta.answer)
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
