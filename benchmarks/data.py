"""Benchmark prompts from the shared evaluation sets, with their references and forced targets.

The benchmark measures the accelerator, so it builds the chat prompts itself: passages numbered in
the user message, the question last. References are the passages; by default their token ids are
sliced out of the prompt's own tokenization (a passage tokenized alone splits differently at its
edges), and `refs="alone"` tokenizes each passage by itself, to measure what that costs.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from transformers import PreTrainedTokenizerBase

INSTRUCTION = ("Answer the question using the passages below. Where a passage answers it, "
               "quote the passage's own words.")


@dataclass
class BenchPrompt:
    prompt: list[int]
    references: dict[str, list[int]]
    target: list[int] | None  # forced decoding: the text the model is made to produce


def _rag_rows(path: Path) -> Iterator[tuple[str, list[str], str | None]]:
    for line in path.open(encoding="utf-8"):
        row = json.loads(line)
        yield row["query"], row["docs"], (row.get("result") or {}).get("text")


def _squad_rows(path: Path) -> Iterator[tuple[str, list[str], str | None]]:
    for article in json.loads(path.read_text(encoding="utf-8"))["data"]:
        for para in article["paragraphs"]:
            for qa in para["qas"]:
                yield qa["question"], [para["context"]], None


def load_rows(path: Path) -> tuple[str, Iterator[tuple[str, list[str], str | None]]]:
    """(dataset name, rows of (question, passages, target text)) for rag.jsonl or SQuAD json."""
    if path.suffix == ".jsonl":
        return path.stem, _rag_rows(path)
    if path.suffix == ".json":
        return "squad", _squad_rows(path)
    raise ValueError(f"unknown data set format: {path} (expected rag.jsonl or SQuAD .json)")


def build_prompt(
    tok: PreTrainedTokenizerBase, question: str, passages: list[str], refs: Literal["prompt", "alone"]
) -> tuple[list[int], dict[str, list[int]]]:
    """Chat prompt token ids and the passages' token ids as references."""
    blocks = [f"[{i + 1}] {p}" for i, p in enumerate(passages)]
    user = INSTRUCTION + "\n\n" + "\n\n".join(blocks) + f"\n\nQuestion: {question}"
    text = tok.apply_chat_template([{"role": "user", "content": user}], add_generation_prompt=True,
                                   tokenize=False)
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    if refs == "alone":
        return ids, {f"passage:{i + 1}": tok(p, add_special_tokens=False)["input_ids"]
                     for i, p in enumerate(passages)}
    references = {}
    for i, passage in enumerate(passages):
        start = text.index(blocks[i]) + len(f"[{i + 1}] ")
        end = start + len(passage)
        # Tokens that overlap the passage: an edge token that also holds the space before it is
        # exactly the token the model would produce when quoting the passage.
        references[f"passage:{i + 1}"] = [t for t, (s, e) in zip(ids, enc["offset_mapping"])
                                          if s < end and e > start]
    return ids, references


def bench_prompts(
    tok: PreTrainedTokenizerBase, path: Path, limit: int, refs: Literal["prompt", "alone"] = "prompt",
    max_passages: int = 10,
) -> tuple[str, list[BenchPrompt]]:
    name, rows = load_rows(path)
    prompts = []
    for question, passages, target in rows:
        if len(prompts) == limit:
            break
        ids, references = build_prompt(tok, question, passages[:max_passages], refs)
        target_ids = tok(target.strip(), add_special_tokens=False)["input_ids"] if target else None
        prompts.append(BenchPrompt(ids, references, target_ids))
    return name, prompts
