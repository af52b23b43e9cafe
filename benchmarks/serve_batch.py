"""Serving benchmark: requests from a data set replayed at a fixed concurrency (closed loop: C clients,
each sending its next request when the last one ends) or with Poisson arrivals (`--rate`), through
the batch engine (llma.batch), LLMA against the same engine's batched greedy and today's serial
engine (one request at a time).

Per method and concurrency: aggregate tok/s, time to first token and time per output token (p50,
p99), tokens per forward, the host's share of the scheduler's busy time, the mean batch, and the
share of requests whose output is identical to the same request run alone on the same engine
(its concurrency-1 run).

    python -m benchmarks.serve_batch --data ../shared/data/llma-rag/rag.jsonl --mode free \
        --concurrency 1,4,16 --limit 32 --device cpu --json benchmarks/results/serve_batch_cpu.json
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from transformers import AutoTokenizer

from benchmarks.data import BenchPrompt, bench_prompts
from benchmarks.report import commit, cpu_name, write_report
from benchmarks.runners import setup
from llma import AnswerHistory, Engine, EngineOptions, ForcedVerifier, LLMAConfig, collect
from llma.batch import BatchEngine
from llma.loading import LoadedModel, resolve_dtype
from llma.options import PROMPT_DTYPES

log = logging.getLogger(__name__)


@dataclass
class Done:
    """One request's outcome."""

    tokens: list[int]
    ttft_s: float
    wall_s: float
    forwards: int


def run_one(engine: Engine | BatchEngine, p: BenchPrompt, config: LLMAConfig, forced: bool,
            history: AnswerHistory, lock: threading.Lock | None) -> Done:
    target = p.target[: config.max_new_tokens] if forced and p.target else None
    cfg = replace(config, max_new_tokens=len(target)) if target else config
    verifier = ForcedVerifier(target) if target else None
    start = time.perf_counter()
    if lock is not None:  # the serial engine: one request at a time, the others queue
        with lock:
            result = collect(engine.stream(p.prompt, p.references, cfg, verifier, history))
    else:
        result = collect(engine.stream(p.prompt, p.references, cfg, verifier, history))
    wall = time.perf_counter() - start
    ttft = wall - (result.stats.wall_s - result.stats.ttft_s)  # queueing included
    return Done(result.tokens, ttft, wall, result.stats.forward_passes)


def replay(call: Callable[[BenchPrompt], Done], prompts: Sequence[BenchPrompt], concurrency: int,
           rate: float | None, seed: int = 0) -> tuple[list[Done], float]:
    """Every prompt once, by `concurrency` clients (or arriving at `rate` per second): the outcomes in
    prompt order and the wall time."""
    results: list[Done | None] = [None] * len(prompts)
    next_i = iter(range(len(prompts)))
    lock = threading.Lock()
    arrivals = np.cumsum(np.random.default_rng(seed).exponential(1 / rate, len(prompts))) if rate else None
    start = time.perf_counter()

    def client() -> None:
        while True:
            with lock:
                i = next(next_i, None)
            if i is None:
                return
            if arrivals is not None:
                time.sleep(max(0.0, start + arrivals[i] - time.perf_counter()))
            results[i] = call(prompts[i])

    clients = len(prompts) if rate else concurrency
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, time.perf_counter() - start


def summary(method: str, concurrency: int, done: list[Done], wall: float, solo: list[list[int]] | None,
            host_share: float | None, mean_batch: float | None) -> dict[str, object]:
    tokens = sum(len(d.tokens) for d in done)
    tpot = [(d.wall_s - d.ttft_s) / (len(d.tokens) - 1) for d in done if len(d.tokens) > 1]
    same = [d.tokens == s for d, s in zip(done, solo)] if solo else [True] * len(done)
    firsts = [next((i for i, (a, b) in enumerate(zip(d.tokens, s)) if a != b), min(len(d.tokens), len(s)))
              for d, s, ok in zip(done, solo or [], same) if not ok]
    pct = lambda xs, q: round(float(np.percentile(xs, q)), 4) if xs else None  # noqa: E731
    return {
        "method": method, "concurrency": concurrency, "requests": len(done), "tokens": tokens,
        "wall_s": round(wall, 3), "tokens_per_s": round(tokens / wall, 2),
        "identical_to_solo": sum(same) / len(same), "first_divergences": firsts,
        "ttft_p50_s": pct([d.ttft_s for d in done], 50), "ttft_p99_s": pct([d.ttft_s for d in done], 99),
        "tpot_p50_s": pct(tpot, 50), "tpot_p99_s": pct(tpot, 99),
        "tokens_per_forward": round(tokens / max(1, sum(d.forwards for d in done)), 3),
        "host_share": None if host_share is None else round(host_share, 3),
        "mean_batch": None if mean_batch is None else round(mean_batch, 2),
    }


def markdown(report: dict) -> str:
    lines = [f"# Serving benchmark: {report['dataset']} ({report['mode']}), {report['model']}", "",
             f"Device: {report['device']}; dtype {report['dtype']}; {report['n_requests']} requests, "
             f"max {report['max_new_tokens']} new tokens; slots {report['slots']}.", "",
             "| method | concurrency | tok/s | vs batched greedy | identical to solo | TTFT p50/p99 s | "
             "TPOT p50/p99 s | tokens/forward | mean batch | host share |", "|---|---|---|---|---|---|---|---|---|---|"]
    greedy = {r["concurrency"]: r["tokens_per_s"] for r in report["results"] if r["method"] == "greedy"}
    for r in report["results"]:
        base = greedy.get(r["concurrency"])
        ratio = f"{r['tokens_per_s'] / base:.2f}x" if base else "-"
        lines.append(f"| {r['method']} | {r['concurrency']} | {r['tokens_per_s']} | {ratio} | "
                     f"{r['identical_to_solo']:.0%} | {r['ttft_p50_s']} / {r['ttft_p99_s']} | "
                     f"{r['tpot_p50_s']} / {r['tpot_p99_s']} | {r['tokens_per_forward']} | "
                     f"{r['mean_batch'] or '-'} | {r['host_share'] if r['host_share'] is not None else '-'} |")
    lines += ["", f"Commit {report.get('commit') or 'not recorded'}. Command: `{report['command']}`"]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="rag.jsonl (LLMA paper) or SQuAD dev json")
    ap.add_argument("--mode", choices=("free", "forced"), default="free")
    ap.add_argument("--limit", type=int, default=32, help="requests (prompts) per run")
    ap.add_argument("--concurrency", default="1,4,16", help="comma-separated client counts (1 = solo runs)")
    ap.add_argument("--rate", type=float, default=None, help="Poisson arrivals per second instead of clients")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--slots", type=int, default=16, help="requests decoded at once by the batch engine")
    ap.add_argument("--max-len", type=int, default=2048, help="context per slot")
    ap.add_argument("--model", default=None)
    ap.add_argument("--random", choices=("7b", "135m"), default=None,
                    help="decode with a random-weight Llama of this shape (the model's tokenizer for the prompts; "
                         "135m: SmolLM2-135M's, for forced runs without the model file)")
    ap.add_argument("--tokenizer", type=Path, default=None,
                    help="with --random: a saved tokenizer folder instead of the model's (no model file needed)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--weights", choices=("full", "int4"), default="full",
                    help="the batch engine's weights (int4: the CPU default, with the C glue)")
    ap.add_argument("--prompt-dtype", choices=PROMPT_DTYPES, default=None,
                    help="int4 weights' prompt products (default: bf16 where the CPU has it natively, else fp32)")
    ap.add_argument("--serial", action="store_true", help="also today's serial engine (one request at a time)")
    ap.add_argument("--warm-pass", action="store_true",
                    help="an untimed pass over every prompt before each timed batch-engine run (CUDA graphs captured)")
    ap.add_argument("--overlap", action="store_true",
                    help="also greedy and LLMA with the requests stepping in two groups in turn")
    ap.add_argument("--json", type=Path, default=None)
    return ap.parse_args(argv)


def random_model(args: argparse.Namespace) -> LoadedModel:
    """The `--random` shape with random weights and the prompts' tokenizer: the saved `--tokenizer`
    folder (no model file needed), else the model's."""
    from benchmarks.gpu_steps import RANDOM_SHAPES, random_llama

    if args.tokenizer:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
        device = torch.device(args.device)
        vocab, dtype = len(tokenizer), resolve_dtype(args.dtype, device)
    else:
        small = setup(args)
        tokenizer, device, dtype, vocab = small.tokenizer, small.device, small.dtype, small.model.config.vocab_size
    return replace(random_llama(RANDOM_SHAPES[args.random], vocab, device, dtype), tokenizer=tokenizer)


def _prompt_dtype(batch: BatchEngine, weights: str) -> str | None:
    """The int4 weights' prompt products' dtype ("bfloat16", "float32"); None for full weights."""
    return str(batch.runner.weights.prompt_dtype).removeprefix("torch.") if weights == "int4" else None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    loaded = random_model(args) if args.random else setup(args)
    dataset, prompts = bench_prompts(loaded.tokenizer, args.data, args.limit)
    forced = args.mode == "forced"
    if forced and not all(p.target for p in prompts):
        raise SystemExit(f"--mode forced needs targets (result.text) in {args.data}")
    levels = sorted({int(c) for c in args.concurrency.split(",")} | {1})
    batch = BatchEngine(loaded, slots=args.slots, max_len=args.max_len, weights=args.weights,
                        glue=args.weights == "int4", prompt_dtype=args.prompt_dtype)
    cuda = loaded.device.type == "cuda"
    name = torch.cuda.get_device_name(loaded.device) if cuda else cpu_name()
    report: dict[str, object] = {
        "device": f"{loaded.device.type} ({name}, {os.cpu_count()} cpus, {torch.get_num_threads()} threads)",
        "dtype": str(loaded.dtype), "model": loaded.name, "dataset": dataset, "mode": args.mode,
        "n_requests": len(prompts), "max_new_tokens": args.max_new_tokens, "slots": args.slots,
        "rate": args.rate, "weights": args.weights,
        "prompt_dtype": _prompt_dtype(batch, args.weights),
        "row_invariant_kernels": batch.runner.invariant,
        "row_tile": batch.runner.tile,
        "cost_model_s": {"by_rows": batch.scheduler.budget.cost.points,
                         "by_shape": batch.scheduler.budget.cost.shapes},
        "command": "python -m benchmarks.serve_batch " + " ".join(sys.argv[1:] if argv is None else argv),
        "commit": commit(), "results": [],
    }
    print(f"device: {report['device']}, {len(prompts)} requests, levels {levels}", flush=True)
    config = LLMAConfig(max_new_tokens=args.max_new_tokens)
    methods: list[tuple[str, Engine | BatchEngine, LLMAConfig, threading.Lock | None]] = [
        ("greedy", batch, config.greedy(), None), ("llma", batch, config, None)]
    if args.overlap:  # the same engine stepping its requests in two groups in turn (llma.batch.scheduler)
        methods += [("greedy_overlap", batch, config.greedy(), None), ("llma_overlap", batch, config, None)]
    if args.serial:
        methods.append(("serial_llma", Engine(loaded, options=EngineOptions.from_env(os.environ)), config,
                        threading.Lock()))
    solos: dict[str, list[list[int]]] = {}  # each method's solo outputs (overlap: its one-group method's)
    for method, engine, cfg, lock in methods:
        batch.scheduler.overlap = method.endswith("_overlap")
        run_one(engine, prompts[0], replace(cfg, max_new_tokens=4), False, AnswerHistory(), lock)  # warm-up
        solo = solos.get(method.removesuffix("_overlap"))
        for c in levels if solo is None else [c for c in levels if c > 1]:
            history = AnswerHistory()  # every run learns from its own answers only
            if engine is batch and (c > 1 or args.warm_pass):  # untimed first: the step shapes it uses captured
                warm = prompts if args.warm_pass else prompts[:c]
                replay(lambda p: run_one(engine, p, cfg, forced, AnswerHistory(), lock), warm, c, None)
            before = replace(batch.stats)
            done, wall = replay(lambda p: run_one(engine, p, cfg, forced, history, lock), prompts, c,
                                args.rate if c > 1 else None)
            if solo is None:  # this method's concurrency-1 run, the first of its levels
                solo = solos[method] = [d.tokens for d in done]
            after = batch.stats
            host = mean_batch = None
            if engine is batch:
                busy = (after.forward_s - before.forward_s) + (after.host_s - before.host_s)
                host = (after.host_s - before.host_s) / busy if busy else 0.0
                steps = after.steps - before.steps
                mean_batch = (after.request_steps - before.request_steps) / steps if steps else 0.0
            row = summary(method, c, done, wall, solo, host, mean_batch)
            print(row, flush=True)
            report["results"].append(row)
            if args.json:  # after every row: a run cut short by a time limit keeps what it measured
                write_report(args.json, report, markdown(report))
    fixed = batch.runner.fixed
    report["fixed_steps"] = fixed is not None
    report["captured_shapes"] = len(fixed.captured) if fixed is not None else 0
    batch.close()
    table = markdown(report)
    print(table)
    if args.json:
        write_report(args.json, report, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
