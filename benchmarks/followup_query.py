"""Which retrieval query follows a conversation best (rag.retrieval.retrieve_in_conversation's rule).

    python -m benchmarks.followup_query --json benchmarks/results/followup_query.json

On the demo documents, for each example question Q of data/questions.json (its answer's file S):
- follow-ups: Q, then a question without a subject of its own (FOLLOW_UPS); a hit when the top
  passage (at least the default min_score) comes from S;
- new subjects: Q, then another example question Q2 (file S2 != S); a hit when the top passage
  comes from S2; `old_subject_passages`: passages from S given for Q2 (per switch).
Searching the question alone bounds what any rule can find (its `new_subject_top1`).
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.report import print_json
from index import Embedder, build_index, load_index
from rag.prompt import Turn
from rag.retrieval import STANDALONE_SCORE, retrieve_in_conversation
from rag.types import DEFAULT_MIN_SCORE

ROOT = Path(__file__).resolve().parent.parent
FOLLOW_UPS = ["Tell me more about it.", "What did I just ask you?", "Can you give an example?",
              "Why is that?", "And what about the exceptions to that?"]
K = 4


def rules(index):
    cache: dict[str, np.ndarray] = {}

    def vec(text):
        if text not in cache:
            cache[text] = index.embedder.embed([text])[0]
        return cache[text]

    def search(v):
        return [(h.chunk.source, h.score) for h in index.search_vector(v / np.linalg.norm(v), K)]

    def best_of(q, prev, margin):
        best: dict[str, tuple[float, str]] = {}
        for penalty, text in ((0.0, q), (margin, q + "\n" + prev)):
            for h in index.search_vector(vec(text), K):
                s = h.score - penalty
                if h.chunk.id not in best or s > best[h.chunk.id][0]:
                    best[h.chunk.id] = (s, h.chunk.source)
        return [(src, s) for s, src in sorted(best.values(), reverse=True)][:K]

    def ours(q, prev):
        turns = [Turn(0, "user", prev), Turn(1, "assistant", "An answer.")]
        return [(p.source, p.score) for p in retrieve_in_conversation(index, q, turns, 2, K, None)]

    return {
        "question alone": lambda q, prev: search(vec(q)),
        "question + previous (one query)": lambda q, prev: search(vec(q + "\n" + prev)),
        "blend: e(q) + 0.5 e(previous)": lambda q, prev: search(vec(q) + 0.5 * vec(prev)),
        "best score of both queries": lambda q, prev: best_of(q, prev, 0.0),
        "best of both, conversation -0.1": lambda q, prev: best_of(q, prev, 0.1),
        f"ours: alone if >= {STANDALONE_SCORE}, else with previous": ours,
    }


def evaluate(rule, questions) -> dict:
    def kept(hits):
        return [src for src, s in hits if s >= DEFAULT_MIN_SCORE]

    follow = [kept(rule(f, q["question"]))[:1] == [q["source"]] for q in questions for f in FOLLOW_UPS]
    switch, old = [], []
    for q in questions:
        for q2 in questions:
            if q2["source"] != q["source"]:
                hits = kept(rule(q2["question"], q["question"]))
                switch.append(hits[:1] == [q2["source"]])
                old.append(sum(src == q["source"] for src in hits))
    return {"follow_up_top1": round(float(np.mean(follow)), 3),
            "new_subject_top1": round(float(np.mean(switch)), 3),
            "old_subject_passages": round(float(np.mean(old)), 3),
            "follow_ups": len(follow), "switches": len(switch)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    questions = json.loads((ROOT / "data" / "questions.json").read_text(encoding="utf-8"))
    embedder = Embedder(device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        build_index(ROOT / "data" / "docs", Path(tmp) / "idx", embedder, progress=False)
        index = load_index(Path(tmp) / "idx", embedder)
        result = {"command": "python -m benchmarks.followup_query", "embedder": embedder.name,
                  "min_score": DEFAULT_MIN_SCORE, "top_k": K,
                  "rules": {name: evaluate(rule, questions) for name, rule in rules(index).items()}}
    print_json(result, args.json)


if __name__ == "__main__":
    main()
