"""The pipeline's question-answering surface over a remote server (`python -m rag.serve --index`),
so a UI and the model can live on different machines.

    pipe = RemotePipeline("http://gpu-box:8000", api_key="...")
    for delta in pipe.stream("What does the with statement do?"): ...

It asks the server's `llma-rag` model (retrieval on the server's index) through the official
`openai` client and turns the stream back into `AnswerDelta`s and an `Answer` (spans, passages,
statistics, token ids; no per-step record). The server keeps no answer cache: `session` is
accepted and unused. Closing the stream early closes the connection, which cancels the generation.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import openai

from llma import DraftDefaults
from rag.compare import compare
from rag.inputs import check_history, check_question
from rag.types import Answer, AnswerDelta, Comparison, Passage, RagSettings, SourceText, TextSpan

RAG_MODEL = "llma-rag"
_DRAFTING = ("min_n", "max_n", "k", "adaptive", "k_max", "policy", "copy_from_output", "answer_history")


class RemoteError(RuntimeError):
    """The server could not be reached or failed (not the caller's input)."""


def _span(raw: Mapping[str, Any]) -> TextSpan:
    return TextSpan(int(raw["start"]), int(raw["end"]), raw["source_kind"], str(raw["source_id"]),
                    int(raw["source_start"]), int(raw["source_end"]), str(raw.get("label", raw["source_id"])))


def _passage(raw: Mapping[str, Any]) -> Passage:
    return Passage(id=str(raw["id"]), number=int(raw["number"]), text=str(raw["text"]), source=str(raw["source"]),
                   title=str(raw["title"]), score=float(raw["score"]), chunk_id=str(raw.get("chunk_id", "")))


def request_params(settings: RagSettings) -> dict[str, Any]:
    """The chat-completion arguments that ask the server for what `settings` asks of a local pipeline."""
    llma = settings.llma
    params: dict[str, Any] = {"max_tokens": llma.max_new_tokens, "temperature": llma.temperature}
    if llma.top_p < 1:
        params["top_p"] = llma.top_p
    if llma.seed is not None:
        params["seed"] = llma.seed
    if settings.stop:
        params["stop"] = list(settings.stop)
    drafting = {name: getattr(llma, name) for name in _DRAFTING if getattr(llma, name) is not None}
    rag = {"top_k": settings.top_k, "min_score": settings.min_score, "use_history_refs": settings.use_history_refs}
    params["extra_body"] = {"llma": drafting if llma.enabled else False,
                            "rag": {k: v for k, v in rag.items() if v is not None}}
    return params


class RemotePipeline:
    """`stream`, `answer`, `compare_with_greedy`, `forget_session` and `draft_defaults` of
    `RAGPipeline`, answered by a server. Raises RemoteError at construction when the server cannot
    be reached or has no index; bad input raises ValueError (the server's 400 message)."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 600.0) -> None:
        self.url = url.rstrip("/")
        self.client = openai.OpenAI(base_url=self.url + "/v1", api_key=api_key or "none", max_retries=0,
                                    timeout=timeout)
        try:
            models = self.client.models.list().data
        except openai.APIError as err:
            raise RemoteError(f"cannot use the server at {self.url}: {err}") from err
        if RAG_MODEL not in [m.id for m in models]:
            raise RemoteError(f"the server at {self.url} has no index (start it with --index DIR)")
        extension = (models[0].model_extra or {}).get("llma") or {}
        self._defaults = DraftDefaults(**extension["draft_defaults"]) if extension.get("draft_defaults") else None

    @property
    def draft_defaults(self) -> DraftDefaults:
        if self._defaults is None:
            raise RemoteError(f"the server at {self.url} does not say its drafting defaults")
        return self._defaults

    def stream(self, question: str, history: Sequence[Mapping[str, object]] = (),
               settings: RagSettings = RagSettings(), session: str | None = None) -> Iterator[AnswerDelta]:
        question = check_question(question)
        messages = [{"role": str(m["role"]), "content": str(m["content"])} for m in check_history(history)
                    if m.get("role") in ("user", "assistant") and isinstance(m.get("content"), str)]
        return self._stream([*messages, {"role": "user", "content": question}], settings)

    def _stream(self, messages: list[dict[str, str]], settings: RagSettings) -> Iterator[AnswerDelta]:
        try:
            chunks = self.client.chat.completions.create(model=RAG_MODEL, messages=messages, stream=True,
                                                         **request_params(settings))
        except openai.BadRequestError as err:
            raise ValueError(_message(err)) from err
        except openai.APIError as err:
            raise RemoteError(f"the server at {self.url} failed: {_message(err)}") from err
        text, passages, first, final = "", None, True, None
        try:
            for chunk in chunks:
                extension = (chunk.model_extra or {}).get("llma") or {}
                if "sources" in extension:
                    passages = [_passage(p) for p in extension["sources"]]
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                if choice.finish_reason is not None:  # read on to the stream's end: its [DONE]
                    final = _answer(text, extension, passages or [])
                    continue
                new = [_span(s) for s in extension.get("spans", [])]
                piece = choice.delta.content or ""
                text += piece
                if piece or new:
                    yield AnswerDelta(text=piece, spans=new, passages=(passages or []) if first else None)
                    first = False
        except openai.APIError as err:
            raise RemoteError(f"the server at {self.url} failed: {_message(err)}") from err
        finally:
            chunks.close()  # an abandoned stream closes its connection: the server cancels
        if final is None:
            raise RemoteError(f"the server at {self.url} ended the answer early (no finish reason)")
        yield AnswerDelta(text="", done=True, answer=final)

    def answer(self, question: str, history: Sequence[Mapping[str, object]] = (),
               settings: RagSettings = RagSettings(), session: str | None = None) -> Answer:
        answer = None
        for delta in self.stream(question, history, settings, session):
            answer = delta.answer or answer
        assert answer is not None  # _stream always ends with the answer or raises
        return answer

    def compare_with_greedy(self, question: str, history: Sequence[Mapping[str, object]] = (),
                            settings: RagSettings = RagSettings(), repeats: int = 3) -> Comparison:
        """As `RAGPipeline.compare_with_greedy`, timed by the server's own clock (`stats["wall_s"]`)."""
        question = check_question(question)
        return compare(lambda s: self.answer(question, history, s), settings, repeats)

    def forget_session(self, session: str) -> None:
        """Nothing to forget: the server keeps no answer cache."""


def _message(err: openai.APIError) -> str:
    body = err.body if isinstance(err.body, dict) else {}
    return str(body.get("message") or err.message)


def _answer(text: str, extension: Mapping[str, Any], passages: list[Passage]) -> Answer:
    return Answer(text=text, spans=[_span(s) for s in extension.get("spans", [])], passages=passages,
                  stats=dict(extension.get("stats", {})), steps=[], stop_reason=str(extension.get("stop_reason", "")),
                  tokens=[int(t) for t in extension.get("tokens", [])],
                  sources={p.id: SourceText(p.id, "passage", p.text, p.label) for p in passages})
