"""Diagnostic for the long run's slow RSS growth: Python-level allocations (tracemalloc) against RSS
with the heap trimmed, over 100 answers in the steady state (answer cache cut to 16 entries, full
after 40 warm-up answers). Run: `python -m reliability.heap_growth` (about 15 min on 2 cores, after
`python -m reliability.longrun` has built its index); output: benchmarks/reliability/heap_growth.txt."""
import gc, os, tracemalloc
os.environ["HF_HUB_OFFLINE"] = "1"
from reliability.longrun import squad_corpus, SQUAD, WORK_DIR, run_questions
from reliability.report import rss_mb, trim_heap
from rag import RAGPipeline, RagSettings
from llma import LLMAConfig
qs = squad_corpus(SQUAD, 12, WORK_DIR / "docs")
pipe = RAGPipeline.from_paths(str(WORK_DIR / "index"), device="cpu")
pipe.cache.capacity = 16
settings = RagSettings(top_k=3, llma=LLMAConfig(max_new_tokens=48))
run_questions(pipe, qs[:40], settings)
gc.collect(); trim_heap(); r0 = rss_mb()
tracemalloc.start(10)
s1 = tracemalloc.take_snapshot()
res = run_questions(pipe, qs[40:140], settings)
gc.collect(); trim_heap(); r1 = rss_mb()
s2 = tracemalloc.take_snapshot()
print("answered", res.answered, "rss", round(r0, 1), "->", round(r1, 1))
stats = s2.compare_to(s1, "traceback")
total = sum(s.size_diff for s in stats)
print("python-level net growth (KiB):", round(total / 1024, 1))
for s in stats[:8]:
    print(round(s.size_diff / 1024, 1), "KiB", s.count_diff, "blocks")
    for line in s.traceback.format()[-6:]:
        print("   ", line)
