"""The measurements: SQuAD retrieval and answers (LLMA vs greedy, references from the prompt or
tokenized alone) and MT-Bench turn 2 with turn 1 as a history reference."""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, field, replace
from pathlib import Path

from tqdm import tqdm

from rag import Answer, RAGPipeline, RagSettings
from rag.eval.metrics import best, contains_answer, exact_match, f1
from rag.eval.squad import SquadQuestion


@dataclass
class Totals:
    """LLMA runs against their greedy baselines: one (llma, greedy) pair of answers per question."""

    pairs: list[tuple[Answer, Answer]] = field(default_factory=list)

    def add(self, llma: Answer, greedy: Answer) -> None:
        self.pairs.append((llma, greedy))

    def _sum(self, key: str, of_greedy: bool = False) -> float:
        return sum(float(pair[of_greedy].stats[key]) for pair in self.pairs)

    def summary(self) -> dict[str, float | int]:
        n = len(self.pairs)
        tokens = self._sum("tokens")
        forwards = self._sum("forward_passes")
        llma_wall = self._sum("wall_s")
        greedy_wall = self._sum("wall_s", of_greedy=True)
        speedups = [float(g.stats["wall_s"]) / max(float(a.stats["wall_s"]), 1e-9) for a, g in self.pairs]
        identical = sum(a.tokens == g.tokens for a, g in self.pairs)
        return {
            "n": n,
            "tokens_per_forward": tokens / forwards if forwards else 0.0,
            "copied_share": self._sum("accepted_tokens") / tokens if tokens else 0.0,
            "speedup_vs_greedy": greedy_wall / llma_wall if llma_wall else 0.0,
            "mean_per_question_speedup": sum(speedups) / n if n else 0.0,
            "identical_to_greedy": identical / n if n else 0.0,
            "mean_new_tokens": tokens / n if n else 0.0,
        }


@dataclass
class SquadResult:
    recall_at_1: float
    recall_at_5: float
    exact_match: float
    f1: float
    contains_answer: float
    from_prompt: dict[str, float | int]
    tokenized_alone: dict[str, float | int]
    refs_differing: float  # share of references whose token ids differ between the two ways


def _refs_differ(pipe: RAGPipeline, question: str, settings: RagSettings) -> tuple[int, int]:
    a = pipe.prepare(question, (), settings).references
    b = pipe.prepare(question, (), replace(settings, refs_from_prompt=False)).references
    return sum(a[k].token_ids != b[k].token_ids for k in a if k in b), len(a)


def run_squad(pipe: RAGPipeline, questions: list[SquadQuestion], settings: RagSettings) -> SquadResult:
    assert pipe.index is not None
    hits1 = hits5 = 0
    em = f1_sum = contains = 0.0
    from_prompt, alone = Totals(), Totals()
    differ = total_refs = 0
    for q in tqdm(questions, desc="squad", unit="question"):
        titles = [hit.chunk.title for hit in pipe.index.search(q.question, k=5)]
        hits1 += titles[:1] == [q.paragraph_title]
        hits5 += q.paragraph_title in titles
        comparison = pipe.compare_with_greedy(q.question, settings=settings, repeats=1)
        from_prompt.add(comparison.llma, comparison.greedy)
        alone.add(pipe.answer(q.question, settings=replace(settings, refs_from_prompt=False)), comparison.greedy)
        text = comparison.llma.text.strip()
        em += best(exact_match, text, q.answers)
        f1_sum += best(f1, text, q.answers)
        contains += contains_answer(text, q.answers)
        d, t = _refs_differ(pipe, q.question, settings)
        differ, total_refs = differ + d, total_refs + t
    n = max(len(questions), 1)
    return SquadResult(hits1 / n, hits5 / n, em / n, f1_sum / n, contains / n, from_prompt.summary(),
                       alone.summary(), differ / max(total_refs, 1))


def load_mt_bench(folder: Path, limit: int, seed: int) -> list[tuple[str, str, str]]:
    """(turn-1 question, GPT-4's turn-1 answer, turn-2 question) for a seeded sample."""
    questions = [json.loads(line) for line in (folder / "question.jsonl").read_text().splitlines() if line.strip()]
    answers = {}
    for line in (folder / "model_answer" / "gpt-4.jsonl").read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            answers[record["question_id"]] = record["choices"][0]["turns"][0]
    items = [(q["turns"][0], answers[q["question_id"]], q["turns"][1]) for q in questions if q["question_id"] in answers]
    return random.Random(seed).sample(items, min(limit, len(items)))


def run_mt_bench(pipe: RAGPipeline, items: list[tuple[str, str, str]], settings: RagSettings) -> dict[str, object]:
    """Turn 2 with turn 1 in the history: LLMA with and without the history as references."""
    with_history, without = Totals(), Totals()
    for turn1, answer1, turn2 in tqdm(items, desc="mt-bench", unit="question"):
        history = [{"role": "user", "content": turn1}, {"role": "assistant", "content": answer1}]
        comparison = pipe.compare_with_greedy(turn2, history, settings, repeats=1)
        with_history.add(comparison.llma, comparison.greedy)
        without.add(pipe.answer(turn2, history, replace(settings, use_history_refs=False)), comparison.greedy)
    return {"with_history_refs": with_history.summary(), "without_history_refs": without.summary()}
