"""Measure the retrieval scores that pick `RagSettings.min_score`'s default, and how a follow-up's
retrieval query (rag.retrieval.conversation_query) fares.

    python -m benchmarks.min_score --json benchmarks/results/min_score.json

Relevant: the score of the gold passage of each question (demo: best chunk of the question's
`source` file in data/questions.json; SQuAD v1.1 dev: the question's own paragraph, first
`--articles` articles indexed). Unrelated: the top score of questions whose answer is not in the
index (SQuAD questions of other articles; off-topic and conversational questions on the demo).
For each threshold: the share of relevant passages kept and of unrelated top hits dropped.
"""
from __future__ import annotations

import argparse
import json
import random
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.report import print_json
from index import Embedder, build_index, load_index

ROOT = Path(__file__).resolve().parent.parent
OFF_TOPIC = [
    "What did I just ask you?", "Tell me more about it.", "Hello!", "Thanks, that helps.",
    "What is the capital of France?", "How do I bake sourdough bread?", "Who won the 2018 World Cup?",
    "What is the weather like today?", "Can you summarise our conversation?", "Why?",
    "How tall is Mount Everest?", "What is photosynthesis?", "Recommend a good novel.",
    "How do volcanoes form?", "What is the boiling point of water?", "Who painted the Mona Lisa?",
    "Explain that again, more simply.", "What is your name?", "How many legs does a spider have?",
    "What is the stock price of Apple?",
]
THRESHOLDS = [round(0.05 * i, 2) for i in range(1, 11)]


def table(relevant: list[float], unrelated: list[float]) -> list[dict]:
    rel, unr = np.array(relevant), np.array(unrelated)
    return [{"threshold": t, "relevant_kept": round(float((rel >= t).mean()), 3),
             "unrelated_dropped": round(float((unr < t).mean()), 3)} for t in THRESHOLDS]


def summary(values: list[float]) -> dict:
    v = np.array(values)
    return {"n": len(v), **{f"p{q}": round(float(np.percentile(v, q)), 3) for q in (1, 5, 10, 50, 90, 95, 99)}}


def demo(embedder: Embedder) -> dict:
    questions = json.loads((ROOT / "data" / "questions.json").read_text(encoding="utf-8"))
    with tempfile.TemporaryDirectory() as tmp:
        build_index(ROOT / "data" / "docs", Path(tmp) / "idx", embedder, progress=False)
        index = load_index(Path(tmp) / "idx", embedder)
        relevant = []
        for q in questions:
            hits = index.search(q["question"], k=len(index))
            relevant.append(max(h.score for h in hits if h.chunk.source == q["source"]))
        unrelated = [index.search(q, k=1)[0].score for q in OFF_TOPIC]
    return {"relevant": summary(relevant), "unrelated": summary(unrelated),
            "unrelated_max": round(max(unrelated), 3), "table": table(relevant, unrelated)}


def squad(embedder: Embedder, path: Path, articles: int, sample: int) -> dict:
    data = json.loads(path.read_text(encoding="utf-8"))["data"]
    indexed, others = data[:articles], data[articles:]
    paragraphs = [p for a in indexed for p in a["paragraphs"]]
    vectors = embedder.embed([p["context"] for p in paragraphs])
    rng = random.Random(0)
    inside = [(qa["question"], i) for i, p in enumerate(paragraphs) for qa in p["qas"]]
    outside = [qa["question"] for a in others for p in a["paragraphs"] for qa in p["qas"]]
    inside, outside = rng.sample(inside, sample), rng.sample(outside, sample)
    q_in = embedder.embed([q for q, _ in inside])
    relevant = [float(q_in[j] @ vectors[i]) for j, (_, i) in enumerate(inside)]
    unrelated = [float(s) for s in (embedder.embed(outside) @ vectors.T).max(axis=1)]
    return {"articles_indexed": articles, "paragraphs": len(paragraphs),
            "relevant": summary(relevant), "unrelated": summary(unrelated),
            "table": table(relevant, unrelated)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--squad", default=str(ROOT.parent / "shared" / "data" / "squad-v1.1-dev" / "dev-v1.1.json"))
    parser.add_argument("--articles", type=int, default=24)
    parser.add_argument("--sample", type=int, default=400)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    embedder = Embedder(device="cpu")
    result = {"embedder": embedder.name, "command": "python -m benchmarks.min_score "
              f"--articles {args.articles} --sample {args.sample}",
              "demo": demo(embedder), "squad": squad(embedder, Path(args.squad), args.articles, args.sample)}
    print_json(result, args.json)


if __name__ == "__main__":
    main()
