"""Token-bounded chunks whose offsets point back into the document text."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import pytest  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from index.chunking import check_chunk_settings, make_splitter, split_document  # noqa: E402
from index.types import Document  # noqa: E402

LONG_TEXT = "\n\n".join(
    f"Paragraph {n}. " + " ".join(f"word{n}_{i} repeated text." for i in range(40)) for n in range(12)
)


@pytest.fixture(scope="module")
def tokenizer(embedder):
    return embedder.tokenizer


def _tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])


def test_offsets_sizes_and_overlap(tokenizer):
    doc = Document("long.md", "Long", LONG_TEXT)
    chunks = split_document(doc, 0, make_splitter(tokenizer, 60, 15))
    assert len(chunks) > 5
    for chunk in chunks:
        assert doc.text[chunk.start:chunk.end] == chunk.text
        assert _tokens(tokenizer, chunk.text) <= 60
        assert (chunk.source, chunk.title) == ("long.md", "Long")
    assert [c.start for c in chunks] == sorted(c.start for c in chunks)
    # Consecutive chunks of one paragraph share some text (the overlap).
    assert any(a.end > b.start for a, b in zip(chunks, chunks[1:]))
    assert len({c.id for c in chunks}) == len(chunks)


def test_ids_are_stable_and_depend_on_source(tokenizer):
    splitter = make_splitter(tokenizer, 60, 15)
    first = split_document(Document("a.md", "A", LONG_TEXT), 0, splitter)
    again = split_document(Document("a.md", "A", LONG_TEXT), 0, splitter)
    other = split_document(Document("b.md", "A", LONG_TEXT), 0, splitter)
    assert [c.id for c in first] == [c.id for c in again]
    assert not {c.id for c in first} & {c.id for c in other}


@pytest.mark.parametrize("size, overlap", [(0, 0), (10, 10), (10, -1), (10, 20)])
def test_bad_chunk_settings_are_refused(size, overlap):
    with pytest.raises(ValueError, match="chunk_overlap"):
        check_chunk_settings(size, overlap)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(["alpha", "beta", "beta", "\n\n", "\n", " ", ".", "é", "ab cd"]),
                min_size=1, max_size=300))
def test_offsets_hold_for_repetitive_text(tokenizer, parts):
    # Repeated fragments are where a naive str.find would point at the wrong copy.
    doc = Document("r.txt", "r", "".join(parts))
    for chunk in split_document(doc, 0, make_splitter(tokenizer, 12, 4)):
        assert doc.text[chunk.start:chunk.end] == chunk.text
        assert chunk.text.strip()
