"""Test data and helpers of the rag tests (a unique module name: `conftest` is ambiguous)."""
from __future__ import annotations

from llma import LLMAConfig
from rag import RagSettings

DOCS = {
    "with.md": "# The with statement\n\nThe with statement is used to wrap the execution of a block "
               "with methods defined by a context manager. This allows common try, except and finally "
               "usage patterns to be encapsulated for convenient reuse.\n",
    "dict.md": "# Dictionaries\n\nDictionaries preserve insertion order, meaning that keys will be "
               "produced in the same order they were added sequentially over the dictionary. "
               "Updating a key does not affect the order.\n",
    "volcano.txt": "A volcano is a rupture in the crust of a planet through which lava, volcanic ash and "
                   "gases escape from a magma chamber below the surface. Café owners near Etna sell "
                   "lava stones to tourists.\n",
}
QUESTIONS = ["What is the with statement used for?", "Do dictionaries preserve insertion order?",
             "What is a volcano?"]


def small(max_new_tokens: int = 20, **kwargs: object) -> RagSettings:
    """Settings for fast tests: few new tokens, and no answer cache unless asked (tests share it)."""
    kwargs.setdefault("use_answer_cache", False)
    return RagSettings(llma=LLMAConfig(max_new_tokens=max_new_tokens), **kwargs)  # type: ignore[arg-type]
