"""`python -m rag.eval --limit N --json OUT`: the figures of benchmarks/results/rag_eval.{json,md}."""
from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from llma import EngineOptions, LLMAConfig, load_model  # noqa: E402
from rag import RAGPipeline, RagSettings  # noqa: E402
from rag.eval.report import environment, markdown, write  # noqa: E402
from rag.eval.runner import load_mt_bench, run_mt_bench, run_squad  # noqa: E402
from rag.eval.squad import SQUAD_PATH, load_squad, sample, squad_index  # noqa: E402


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m rag.eval", description=__doc__)
    p.add_argument("--limit", type=int, default=30, help="SQuAD questions (seeded sample)")
    p.add_argument("--mt-limit", type=int, default=10, help="MT-Bench questions (0: skip)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--k", type=int, default=4, help="passages in the prompt")
    p.add_argument("--squad", type=Path, default=SQUAD_PATH)
    p.add_argument("--mt-bench", type=Path, default=Path("../shared/data/mt-bench"))
    p.add_argument("--work-dir", type=Path, default=Path("/tmp/llma-rag-eval"), help="where the SQuAD index is cached")
    p.add_argument("--model", default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--json", type=Path, default=None, help="write the results here (and a .md beside it)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    records, questions = load_squad(args.squad)
    index = squad_index(records, args.work_dir)
    loaded = load_model(args.model, device=args.device)
    print(environment(loaded), flush=True)
    settings = RagSettings(top_k=args.k, llma=LLMAConfig(max_new_tokens=args.max_new_tokens),
                           use_answer_cache=False)
    options = EngineOptions.from_env(os.environ)  # LLMA_BACKEND, LLMA_STATIC_*
    squad = run_squad(RAGPipeline(index, loaded, engine_options=options), sample(questions, args.limit, args.seed),
                      settings)
    mt = run_mt_bench(RAGPipeline(None, loaded, embedder=index.embedder, engine_options=options),
                      load_mt_bench(args.mt_bench, args.mt_limit, args.seed), settings) if args.mt_limit else None
    command = "python -m rag.eval " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    result = {
        "n_questions": squad.from_prompt["n"],
        "recall_at_k": {"1": squad.recall_at_1, "5": squad.recall_at_5},
        "exact_match": squad.exact_match, "f1": squad.f1, "contains_answer": squad.contains_answer,
        "tokens_per_forward": squad.from_prompt["tokens_per_forward"],
        "speedup_vs_greedy": squad.from_prompt["speedup_vs_greedy"],
        "identical_to_greedy": squad.from_prompt["identical_to_greedy"],
        "refs_from_prompt": {"from_prompt": squad.from_prompt, "tokenized_alone": squad.tokenized_alone,
                             "share_of_references_tokenized_differently": squad.refs_differing},
        "mt_bench_turn2": mt,
        "settings": {"limit": args.limit, "mt_limit": args.mt_limit, "seed": args.seed, "k": args.k,
                     "max_new_tokens": args.max_new_tokens, "llma": repr(settings.llma), "threads": torch.get_num_threads()},
        "environment": environment(loaded),
        "command": command,
        "runtime_s": time.perf_counter() - started,
    }
    print(markdown(result))
    if args.json:
        write(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
