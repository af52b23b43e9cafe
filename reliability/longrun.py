"""Long run: many consecutive questions through one RAG pipeline; does memory or the KV cache grow?

    python -m reliability.longrun --questions 500 --json benchmarks/results/reliability/longrun.json

Real data: SQuAD v1.1 dev articles become the documents (one .txt per article, indexed once into
artifacts/), and their questions, taken round-robin across articles, are asked in order. Each answer
is checked to be complete; after each, the process's RSS, the tokens held in the KV cache and (on
CUDA) the GPU memory in use are recorded. A leak shows as growth over the second half of the run.
`--warm-longest` first asks, unrecorded, the question with the longest prompt and the longest
question: native buffers that keep the size of the largest input so far (a high-water mark,
benchmarks/results/reliability/shape_memory.md) then reach it before the run, so growth left in the run is
not theirs.
"""
from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from itertools import zip_longest
from pathlib import Path

from tqdm import tqdm

from reliability.report import REPORT_DIR, ROOT, header, rss_mb, run_markdown, trim_heap, write_report

log = logging.getLogger(__name__)

SQUAD = ROOT.parent / "shared" / "data" / "squad-v1.1-dev" / "dev-v1.1.json"
WORK_DIR = ROOT / "artifacts" / "longrun"
MAX_GROWTH_MB = 50.0  # RSS (or GPU memory) growth over the second half above this counts as a leak


@dataclass
class Sample:
    question: int
    rss_mb: float
    kv_tokens: int  # tokens held in the KV cache after the answer
    answer_tokens: int  # that answer's prompt + output: the KV cache must hold no more than this
    answer_cache: int  # entries in the pipeline's answer cache (bounded by its capacity)
    cuda_mb: float | None
    gc_objects: int | None = None


@dataclass
class LongRun:
    answered: int = 0
    failed: list[dict[str, object]] = field(default_factory=list)
    incomplete: int = 0
    latencies_s: list[float] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    tokens: int = 0
    cache_hits_used: int = 0


def squad_corpus(path: Path, articles: int, docs_dir: Path) -> list[str]:
    """Write `articles` SQuAD articles as documents; return their questions, round-robin."""
    data = json.loads(path.read_text(encoding="utf-8"))["data"][:articles]
    docs_dir.mkdir(parents=True, exist_ok=True)
    per_article = []
    for article in data:
        text = "\n\n".join(p["context"] for p in article["paragraphs"])
        (docs_dir / f"{article['title']}.txt").write_text(text, encoding="utf-8")
        per_article.append([qa["question"] for p in article["paragraphs"] for qa in p["qas"]])
    return [q for row in zip_longest(*per_article) for q in row if q]


def _cuda_mb() -> float | None:
    import torch

    return torch.cuda.memory_allocated() / 2**20 if torch.cuda.is_available() else None


def sample(pipe: object, question: int, answer_tokens: int, with_gc: bool, trim: bool = False) -> Sample:
    """The state after one answer; `trim`: collect garbage and give freed heap back to the OS first,
    so that RSS shows memory in use rather than fragmentation."""
    if trim:
        gc.collect()
        trim_heap()
    return Sample(question, rss_mb(), pipe.engine.cached_tokens, answer_tokens,  # type: ignore[attr-defined]
                  len(pipe.caches), _cuda_mb(), len(gc.get_objects()) if with_gc else None)  # type: ignore[attr-defined]


def run_questions(pipe: object, questions: Sequence[str], settings: object, gc_every: int = 50,
                  progress: bool = False, trim: bool = False, session: str | None = "longrun") -> LongRun:
    """Ask every question in turn, all in one `session` (one user: its answer cache fills up);
    failures are recorded, never raised."""
    result = LongRun()
    result.samples.append(sample(pipe, 0, 0, True, trim))
    for n, question in enumerate(tqdm(questions, desc="questions", disable=not progress), start=1):
        started = time.perf_counter()
        try:
            answer = pipe.answer(question, settings=settings, session=session)  # type: ignore[attr-defined]
        except Exception as exc:  # a long run must report every failure, not stop at the first
            log.exception("question %d failed", n)
            result.failed.append({"question": n, "text": question, "error": f"{type(exc).__name__}: {exc}"})
            continue
        result.latencies_s.append(time.perf_counter() - started)
        result.answered += 1
        result.tokens += int(answer.stats["tokens"])
        result.cache_hits_used += any(k.startswith("cache:") for k in answer.sources)
        complete = bool(answer.text.strip()) and answer.stop_reason in ("eos", "max_new_tokens", "stop_string")
        result.incomplete += not complete
        held = int(answer.stats["prompt_tokens"]) + int(answer.stats["tokens"])
        result.samples.append(sample(pipe, n, held, n % gc_every == 0, trim))
    return result


def longest_inputs(pipe: object, questions: Sequence[str], settings: object) -> tuple[list[str], int]:
    """The question whose prompt is longest, and the longest question; and that prompt's length."""
    lengths = [len(pipe.prepare(q, settings=settings).prompt_ids) for q in questions]  # type: ignore[attr-defined]
    longest = max(range(len(questions)), key=lengths.__getitem__)
    return list(dict.fromkeys([questions[longest], max(questions, key=len)])), lengths[longest]


def growth(points: Sequence[tuple[int, float]], unit: str = "mb") -> dict[str, float]:
    """(run index, value) points: the value at the start, after warm-up (a tenth of the run), at the
    end, its maximum, and its growth and least-squares slope over the second half."""
    half = points[len(points) // 2:]
    xs, ys = [x for x, _ in half], [y for _, y in half]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mean_x) ** 2 for x in xs) or 1.0
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / var
    warm = points[min(len(points) - 1, max(1, len(points) // 10))][1]
    return {f"start_{unit}": points[0][1], f"after_warmup_{unit}": warm, f"end_{unit}": points[-1][1],
            f"max_{unit}": max(y for _, y in points), f"second_half_growth_{unit}": ys[-1] - ys[0],
            f"second_half_slope_{unit}_per_100": 100 * slope}


def prefixed(prefix: str, figures: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}_{k}": v for k, v in figures.items()}


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] if ordered else float("nan")


def summary(result: LongRun, context_length: int) -> dict[str, object]:
    kv = [s.kv_tokens for s in result.samples]
    excess = max((s.kv_tokens - s.answer_tokens for s in result.samples[1:]), default=0)
    cuda = [(s.question, s.cuda_mb) for s in result.samples if s.cuda_mb is not None]
    objects = [s.gc_objects for s in result.samples if s.gc_objects is not None]
    return {"answered": result.answered, "failed": len(result.failed), "incomplete": result.incomplete,
            "tokens": result.tokens, "answers_using_a_cached_answer": result.cache_hits_used,
            "latency_p50_s": percentile(result.latencies_s, 50), "latency_p90_s": percentile(result.latencies_s, 90),
            "latency_max_s": max(result.latencies_s, default=float("nan")),
            **prefixed("rss", growth([(s.question, s.rss_mb) for s in result.samples])),
            "kv_tokens_max": max(kv), "kv_tokens_last": kv[-1],
            "kv_tokens_beyond_last_answer_max": excess,
            "answer_cache_max": max(s.answer_cache for s in result.samples),
            "context_length": context_length,
            **(prefixed("cuda", growth(cuda)) if cuda else {}),
            "gc_objects_first": objects[0] if objects else None, "gc_objects_last": objects[-1] if objects else None}


def leaked(figures: dict[str, object]) -> bool:
    """RSS grew over the second half, or the KV cache held more than the last answer."""
    return (float(figures["rss_second_half_growth_mb"]) > MAX_GROWTH_MB  # type: ignore[arg-type]
            or float(figures.get("cuda_second_half_growth_mb", 0.0)) > MAX_GROWTH_MB  # type: ignore[arg-type]
            or int(figures["kv_tokens_beyond_last_answer_max"]) > 0)  # type: ignore[call-overload]


def markdown(report: dict[str, object]) -> str:
    return run_markdown(f"Long run: {report['questions']} consecutive questions",
                        f"{report['machine']}, device {report['device']} ({report['torch_threads']} torch threads)",
                        report)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m reliability.longrun", description=__doc__.splitlines()[0])
    p.add_argument("--questions", type=int, default=500)
    p.add_argument("--articles", type=int, default=12, help="SQuAD articles to index")
    p.add_argument("--data", type=Path, default=SQUAD)
    p.add_argument("--device", default="cpu")
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--malloc-trim", action="store_true", help="return freed heap to the OS before each RSS reading")
    p.add_argument("--warm-longest", action="store_true",
                   help="first ask, unrecorded, the questions with the longest prompt and the longest text")
    p.add_argument("--json", type=Path, default=REPORT_DIR / "longrun.json")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # Taken first: the commit and date the run started from, even if HEAD moves while it runs.
    head = header("python -m reliability.longrun " + " ".join(argv if argv is not None else sys.argv[1:]))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from index import build_index
    from llma import LLMAConfig
    from rag import RAGPipeline, RagSettings

    if args.threads:
        torch.set_num_threads(args.threads)
    questions = squad_corpus(args.data, args.articles, WORK_DIR / "docs")[: args.questions]
    build_index(WORK_DIR / "docs", WORK_DIR / "index", progress=False)
    pipe = RAGPipeline.from_paths(str(WORK_DIR / "index"), device=args.device)
    settings = RagSettings(top_k=args.top_k, llma=LLMAConfig(max_new_tokens=args.max_new_tokens))
    warm: dict[str, object] = {}
    if args.warm_longest:
        warm_questions, warm["warm_up_prompt_tokens"] = longest_inputs(pipe, questions, settings)
        warm["warm_up_failed"] = len(run_questions(pipe, warm_questions, settings).failed)
    started = time.monotonic()
    result = run_questions(pipe, questions, settings, progress=True, trim=args.malloc_trim)
    figures = {**summary(result, pipe.engine.context_length), **warm, "wall_s": time.monotonic() - started}
    verdict = "FAIL" if result.failed or result.incomplete or leaked(figures) else "PASS"
    report = {**head,
              "device": str(pipe.loaded.device), "torch_threads": torch.get_num_threads(),
              "questions": len(questions), "settings": repr(settings),
              "figures": figures, "verdict": verdict, "failures": result.failed[:20],
              "samples": [asdict(s) for s in result.samples]}
    write_report(args.json, report, markdown(report))
    print(markdown(report))
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
