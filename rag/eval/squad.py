"""SQuAD v1.1 dev: its paragraphs as an index (built once, cached) and a seeded question sample."""
from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path

from index import DocumentIndex, build_index, load_index

log = logging.getLogger(__name__)

SQUAD_PATH = Path("../shared/data/squad-v1.1-dev/dev-v1.1.json")


@dataclass(frozen=True)
class SquadQuestion:
    id: str
    question: str
    answers: tuple[str, ...]
    paragraph_title: str  # the title of its paragraph in the index: "<article> (<n>)"


def _title(article: str, n: int) -> str:
    # One title per paragraph, so that a retrieved chunk names its paragraph.
    return f"{article.replace('_', ' ')} ({n})"


def load_squad(path: Path) -> tuple[list[dict[str, str]], list[SquadQuestion]]:
    """(paragraph records for the index, every question)."""
    data = json.loads(path.read_text(encoding="utf-8"))["data"]
    records, questions = [], []
    for article in data:
        for n, paragraph in enumerate(article["paragraphs"], start=1):
            title = _title(article["title"], n)
            records.append({"title": title, "text": paragraph["context"]})
            questions += [SquadQuestion(qa["id"], qa["question"], tuple(a["text"] for a in qa["answers"]), title)
                          for qa in paragraph["qas"]]
    return records, questions


def sample(questions: list[SquadQuestion], limit: int, seed: int) -> list[SquadQuestion]:
    return random.Random(seed).sample(questions, min(limit, len(questions)))


def squad_index(records: list[dict[str, str]], work_dir: Path) -> DocumentIndex:
    """Index the paragraphs into `work_dir` (incremental: nothing is embedded again on a re-run)."""
    docs = work_dir / "squad-docs"
    docs.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    target = docs / "paragraphs.jsonl"
    if not target.is_file() or target.read_text(encoding="utf-8") != lines:
        target.write_text(lines, encoding="utf-8")
    report = build_index(docs, work_dir / "squad-index", progress=True)
    log.info("%s", report.summary())
    return load_index(work_dir / "squad-index")
