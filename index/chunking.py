"""Split documents into token-bounded, overlapping chunks with exact offsets."""
from __future__ import annotations

import hashlib
import logging
from typing import Any

from langchain_text_splitters import RecursiveCharacterTextSplitter, TextSplitter

from .types import Chunk, Document

log = logging.getLogger(__name__)

# 200 tokens + [CLS]/[SEP] fits MiniLM's 256-token window with room to spare, and
# is long enough to hold a definition with its context; 40 tokens of overlap
# keeps a sentence cut at a boundary readable in the next chunk.
DEFAULT_CHUNK_SIZE = 200
DEFAULT_CHUNK_OVERLAP = 40


def check_chunk_settings(chunk_size: int, chunk_overlap: int) -> None:
    if chunk_size <= 0 or not 0 <= chunk_overlap < chunk_size:
        raise ValueError(
            f"need chunk_size > 0 and 0 <= chunk_overlap < chunk_size, "
            f"got chunk_size={chunk_size}, chunk_overlap={chunk_overlap}"
        )


def make_splitter(tokenizer: Any, chunk_size: int, chunk_overlap: int) -> TextSplitter:
    """A recursive splitter that measures length in the embedder's tokens.

    Same as `RecursiveCharacterTextSplitter.from_huggingface_tokenizer`, except
    that `verbose=False` silences the tokenizer's "sequence longer than the
    model maximum" warning: measuring long texts is the point here.
    """
    check_chunk_settings(chunk_size, chunk_overlap)

    def token_length(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    return RecursiveCharacterTextSplitter(
        chunk_size=chunk_size, chunk_overlap=chunk_overlap, length_function=token_length
    )


def chunk_id(source: str, doc_number: int, start: int, text: str) -> str:
    """Stable across rebuilds as long as the file's content does not change."""
    key = f"{source}\0{doc_number}\0{start}\0{text}".encode()
    return hashlib.sha1(key).hexdigest()[:16]


def split_document(doc: Document, doc_number: int, splitter: TextSplitter) -> list[Chunk]:
    """Chunks of one document, in order, with `doc.text[start:end] == text`.

    Offsets are found here rather than with the splitter's `add_start_index`,
    which steps back `chunk_overlap` *characters* when the overlap is counted
    in tokens, and can then miss the chunk (start index -1).
    """
    chunks: list[Chunk] = []
    cursor = 0
    for piece in splitter.split_text(doc.text):
        start = doc.text.find(piece, cursor)
        if start < 0:  # cannot happen for a stripped substring; keep going anyway
            log.warning("chunk not found in %s; searching from the start", doc.source)
            start = doc.text.find(piece)
        end = start + len(piece)
        chunks.append(Chunk(chunk_id(doc.source, doc_number, start, piece),
                            piece, doc.source, doc.title, start, end))
        # Chunks come in document order and overlap, so the next one starts
        # after this one's start but possibly before its end.
        cursor = start + 1
    return chunks
