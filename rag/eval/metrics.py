"""The official SQuAD v1.1 answer metrics: exact match and token F1 after normalisation."""
from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable, Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower case, no punctuation, no articles (a, an, the), single spaces: as the official script."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(truth))


def f1(prediction: str, truth: str) -> float:
    pred, gold = normalize_answer(prediction).split(), normalize_answer(truth).split()
    common = sum((Counter(pred) & Counter(gold)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def best(metric: Callable[[str, str], float], prediction: str, truths: Sequence[str]) -> float:
    """The score against the closest of the gold answers, as the official script does."""
    return max(metric(prediction, t) for t in truths)


def contains_answer(prediction: str, truths: Sequence[str]) -> float:
    """1 when a normalised gold answer occurs in the normalised prediction (verbose answers)."""
    norm = f" {normalize_answer(prediction)} "
    return float(any(f" {normalize_answer(t)} " in norm for t in truths))
