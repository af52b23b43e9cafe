"""Diagnostic for the long run's slow RSS growth: Python-level allocations (tracemalloc) against RSS
with the heap trimmed, over 100 answers in the steady state (answer cache cut to 16 entries, full
after 40 warm-up answers). Run: `python -m reliability.heap_growth` (about 15 min on 2 cores, after
`python -m reliability.longrun` has built its index); output: benchmarks/results/reliability/heap_growth.txt."""
from __future__ import annotations

import gc
import os
import tracemalloc

from reliability.longrun import SQUAD, WORK_DIR, run_questions, squad_corpus
from reliability.report import rss_mb, trim_heap

WARMUP, MEASURED, CACHE_SIZE, TOP = 40, 100, 16, 8


def trimmed_rss() -> float:
    gc.collect()
    trim_heap()
    return rss_mb()


def main() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    from llma import LLMAConfig
    from rag import RAGPipeline, RagSettings

    questions = squad_corpus(SQUAD, 12, WORK_DIR / "docs")
    pipe = RAGPipeline.from_paths(str(WORK_DIR / "index"), device="cpu")
    pipe.caches.capacity = CACHE_SIZE  # full after the warm-up: the steady state
    settings = RagSettings(top_k=3, llma=LLMAConfig(max_new_tokens=48))
    run_questions(pipe, questions[:WARMUP], settings)
    before = trimmed_rss()
    tracemalloc.start(10)
    first = tracemalloc.take_snapshot()
    result = run_questions(pipe, questions[WARMUP : WARMUP + MEASURED], settings)
    after = trimmed_rss()
    stats = tracemalloc.take_snapshot().compare_to(first, "traceback")
    print("answered", result.answered, "rss", round(before, 1), "->", round(after, 1))
    print("python-level net growth (KiB):", round(sum(s.size_diff for s in stats) / 1024, 1))
    for stat in stats[:TOP]:
        print(round(stat.size_diff / 1024, 1), "KiB", stat.count_diff, "blocks")
        for line in stat.traceback.format()[-6:]:
            print("   ", line)


if __name__ == "__main__":
    main()
