"""Document question answering with LLMA: retrieve passages, answer with the model, copy from them.

    from rag import RAGPipeline, RagSettings
    pipe = RAGPipeline.from_paths("indexes/demo")
    answer = pipe.answer("What does the with statement do?")
    answer.text, answer.spans, answer.stats["tokens_per_forward"]
"""
from rag.cache import AnswerCache, CachedAnswer, SessionCaches
from rag.inputs import check_question
from rag.pipeline import RAGPipeline, retrieve
from rag.types import Answer, AnswerDelta, Comparison, Passage, RagSettings, SourceText, TextSpan

__all__ = [
    "Answer", "AnswerCache", "AnswerDelta", "CachedAnswer", "Comparison", "Passage", "RAGPipeline",
    "RagSettings", "SessionCaches", "SourceText", "TextSpan", "check_question", "retrieve",
]
