"""LangChain bindings with the real model: chat model, streaming, stop, retriever, the LCEL chain."""
from __future__ import annotations

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

from rag_fixtures import DOCS
from index import DocumentIndex
from llma import LLMAConfig
from rag import RAGPipeline
from rag.langchain import IndexRetriever, LLMAChatModel, make_chain

PASSAGE = "The with statement is used to wrap the execution of a block with methods defined by a context manager."
MESSAGES = [SystemMessage("Answer from the passage, copying its wording."),
            HumanMessage(f"Passage: {PASSAGE}\n\nQuestion: What is the with statement used for?")]


@pytest.fixture(scope="module")
def model(pipe: RAGPipeline) -> LLMAChatModel:
    return LLMAChatModel(pipeline=pipe, llma=LLMAConfig(max_new_tokens=20))


class Tokens(BaseCallbackHandler):
    def __init__(self) -> None:
        self.tokens: list[str] = []

    def on_llm_new_token(self, token: str, **kwargs: object) -> None:
        self.tokens.append(token)


def test_invoke_with_references_reports_llma_statistics(model: LLMAChatModel) -> None:
    reply = model.invoke(MESSAGES, references=[PASSAGE])
    greedy = LLMAChatModel(pipeline=model.pipeline, llma=model.llma.greedy()).invoke(MESSAGES)
    assert isinstance(reply, AIMessage) and reply.content == greedy.content
    stats = reply.response_metadata["llma_stats"]
    assert stats["tokens"] <= 20 and stats["references"] == 1 and stats["accepted_tokens"] > 0
    assert reply.usage_metadata["output_tokens"] == stats["tokens"]
    assert model._llm_type == "llma"


def test_stream_yields_the_same_text_and_calls_back_per_delta(model: LLMAChatModel) -> None:
    handler = Tokens()
    chunks = list(model.stream(MESSAGES, references=[PASSAGE], config={"callbacks": [handler]}))
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged = merged + chunk  # generation info and metadata must merge without conflicts
    assert merged.content == model.invoke(MESSAGES, references=[PASSAGE]).content
    assert "".join(handler.tokens) == merged.content and len(chunks) > 1
    assert merged.response_metadata["llma_stats"]["tokens"] <= 20


def test_stop_strings_cut_the_reply(model: LLMAChatModel) -> None:
    full = model.invoke(MESSAGES).content
    word = full.split()[2]
    cut = model.invoke(MESSAGES, stop=[word])
    assert cut.content == full[:full.index(word)] and cut.response_metadata["stop_reason"] == "stop_string"


def test_tool_messages_are_refused(model: LLMAChatModel) -> None:
    with pytest.raises(ValueError, match="not 'tool'"):
        model.invoke([ToolMessage("x", tool_call_id="1")])


def test_retriever_returns_documents_with_scores(index: DocumentIndex) -> None:
    docs = IndexRetriever(index=index, k=2).invoke("What is a volcano?")
    assert len(docs) == 2 and docs[0].metadata["source"] == "volcano.txt"
    assert set(docs[0].metadata) == {"source", "title", "score", "chunk_id"}
    assert docs[0].page_content in DOCS["volcano.txt"] and docs[0].metadata["score"] >= docs[1].metadata["score"]
    assert IndexRetriever(index=index, k=3, min_score=0.99).invoke("What is a volcano?") == []


def test_chain_answers_from_retrieved_passages_copying_them(index: DocumentIndex, model: LLMAChatModel) -> None:
    chain = make_chain(IndexRetriever(index=index, k=2), model)
    reply = chain.invoke("What is the with statement used for?")
    assert isinstance(reply, AIMessage) and reply.content
    stats = reply.response_metadata["llma_stats"]
    assert stats["references"] == 2 and stats["tokens"] <= 20
    streamed = "".join(chunk.content for chunk in chain.stream("What is the with statement used for?"))
    assert streamed == reply.content


def test_batch_and_abatch_decode_together_each_as_alone(model: LLMAChatModel) -> None:
    """`.batch` runs its inputs in threads; the batch engine decodes them in shared steps."""
    inputs = [MESSAGES, [HumanMessage("What is a volcano?")], [HumanMessage("Name three colours.")]]
    alone = [model.invoke(m).content for m in inputs]
    replies = model.batch(inputs)
    assert [r.content for r in replies] == alone
    assert max(r.response_metadata["llma_stats"]["mean_batch"] for r in replies) > 1
    import asyncio

    replies = asyncio.run(model.abatch(inputs))
    assert [r.content for r in replies] == alone
