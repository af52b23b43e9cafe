"""LangChain's standard chat-model suites (the langchain-tests package) on `LLMAChatModel`, with
the real bundled model. The suites skip what a local model without tools cannot do: tool calling,
structured output and JSON mode, image, audio, PDF and Anthropic-style inputs, a per-call model
switch (one pipeline holds one model), and the recorded-HTTP (VCR) benchmark."""
from __future__ import annotations

from typing import Any

import pytest
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests

from llma import LLMAConfig
from rag import RAGPipeline
from rag.langchain import LLMAChatModel

# Settings of a remote API (LangChain lists them as standard): a local model refuses them.
_REMOTE_ONLY = frozenset({"timeout", "max_retries", "api_key", "base_url"})
_TOKENS = 4


class _LocalModel:
    """What the suites ask of the model class, shared by the unit and the integration suite."""

    _pipe: RAGPipeline | None = None

    @pytest.fixture(autouse=True)
    def _use_pipeline(self, pipe: RAGPipeline) -> None:
        # `chat_model_params` is a property (it cannot take fixtures): hand it the session's pipeline.
        type(self)._pipe = pipe

    @property
    def chat_model_class(self) -> type[LLMAChatModel]:
        return LLMAChatModel

    @property
    def chat_model_params(self) -> dict[str, Any]:
        # A few tokens per reply keep the suite fast (it checks shape, not content). Through `llma`:
        # the suites pass `max_tokens` beside these parameters themselves.
        return {"pipeline": self._pipe, "llma": LLMAConfig(max_new_tokens=_TOKENS)}

    @property
    def standard_chat_model_params(self) -> dict[str, Any]:
        params = super().standard_chat_model_params  # type: ignore[misc]
        params = {name: value for name, value in params.items() if name not in _REMOTE_ONLY}
        return {**params, "max_tokens": _TOKENS}  # the suites' 100 tokens take long on a CPU

    @property
    def has_tool_calling(self) -> bool:
        return False

    @property
    def has_structured_output(self) -> bool:
        return False

    @property
    def supports_model_override(self) -> bool:
        return False  # one pipeline serves the one model it loaded


class TestLLMAChatModelUnit(_LocalModel, ChatModelUnitTests):
    """The unit suite: construction, standard (tracing) parameters, serialisation."""


@pytest.mark.slow
class TestLLMAChatModelIntegration(_LocalModel, ChatModelIntegrationTests):
    """The integration suite: invoke, stream, batch, async, usage metadata, stop, conversations."""
