"""End-to-end evaluation: retrieval recall, answer EM/F1 on SQuAD, LLMA vs greedy, multi-turn MT-Bench.

Run `python -m rag.eval --limit 30 --json benchmarks/results/rag_eval.json`.
"""
