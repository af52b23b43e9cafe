"""LLMA against plain greedy decoding on the same question: like with like, warmed, repeated."""
from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import replace

from rag.types import Answer, Comparison, RagSettings

AnswerFn = Callable[[RagSettings], Answer]


def _ratio(llma: Answer, greedy: Answer) -> float:
    wall = float(llma.stats["wall_s"])
    return float(greedy.stats["wall_s"]) / wall if wall > 0 else 0.0


def compare(answer: AnswerFn, settings: RagSettings, repeats: int = 3, warm_up: bool = True) -> Comparison:
    """Time `answer` with LLMA as set in `settings` against plain greedy decoding (proposer off).

    Both runs get the same references: the answer cache is off for both, so neither copies an
    earlier answer to the question being compared (and nothing is stored). With `warm_up`, one
    unmeasured run of each comes first. Then `repeats` measured pairs, greedy and LLMA alternately
    (the pair's first run alternates too). `speedup` is the median of the pairs' greedy / LLMA
    wall-time ratios, `speedups` all of them in run order; `llma` and `greedy` are the answers of
    the pair whose ratio is that median (the lower middle one for an even count). `identical` holds
    when every LLMA run gave the token ids of every greedy run.
    """
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an integer >= 1, got {repeats!r}")
    llma_settings = replace(settings, use_answer_cache=False)
    greedy_settings = replace(llma_settings, llma=settings.llma.greedy())
    if warm_up:
        answer(greedy_settings)
        answer(llma_settings)
    pairs: list[tuple[Answer, Answer]] = []
    for n in range(repeats):
        if n % 2 == 0:
            greedy = answer(greedy_settings)
            llma = answer(llma_settings)
        else:
            llma = answer(llma_settings)
            greedy = answer(greedy_settings)
        pairs.append((llma, greedy))
    speedups = [_ratio(llma, greedy) for llma, greedy in pairs]
    middle = sorted(range(repeats), key=lambda i: speedups[i])[(repeats - 1) // 2]
    tokens = {tuple(answer.tokens) for pair in pairs for answer in pair}
    return Comparison(llma=pairs[middle][0], greedy=pairs[middle][1], speedup=statistics.median(speedups),
                      identical=len(tokens) == 1, speedups=speedups)
