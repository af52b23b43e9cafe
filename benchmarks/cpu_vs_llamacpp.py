"""Our CPU decoding beside llama.cpp's, side by side in one run on the same prompts, interleaved prompt by prompt.

    python -m benchmarks.cpu_vs_llamacpp [--limit 8] [--max-new-tokens 96] [--threads 2]

On the first `--limit` rag.jsonl prompts (benchmarks.data's chat prompts, as token ids), greedy, up
to `--max-new-tokens` tokens (EOS ends an answer; no repetition stop): llama.cpp (llama-cpp-python
LLAMA_CPP_VERSION, installed by this script into its own venv under `--venv`, the bundled GGUF as
shipped) and the engine the app opens on CPU (llma.batch.open_engine with EngineOptions.from_env:
int4 weights by default), its greedy and its LLMA (references: the prompt's passages, "rag free"),
and the same engine with full (fp32) weights, greedy, to say how often the default's output equals
fp32's. Reports decode tok/s after the first token and end to end, LLMA's identity with its own
greedy, first divergences, the device, the commit and the `uptime` load before and after.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from benchmarks.data import bench_prompts
from benchmarks.report import _first_divergence, commit
from llma.batch import BatchEngine
from llma.batch.engine import open_engine
from llma.cpu.weights import Int4Weights
from llma.engine import LLMAConfig
from llma.history import AnswerHistory
from llma.loading import bundled_gguf, cache_root, load_model
from llma.options import EngineOptions

LLAMA_CPP_VERSION = "0.3.36"
WORKER = Path(__file__).with_name("llamacpp_worker.py")


def llama_python(venv: Path) -> Path:
    """The venv's python with llama-cpp-python LLAMA_CPP_VERSION, made (pip builds it) if missing."""
    python = venv / "bin" / "python"
    check = [str(python), "-c", f"import llama_cpp, sys; sys.exit(llama_cpp.__version__ != '{LLAMA_CPP_VERSION}')"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    logging.info("installing llama-cpp-python %s into %s (builds llama.cpp: minutes)", LLAMA_CPP_VERSION, venv)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
                    f"llama-cpp-python=={LLAMA_CPP_VERSION}"], check=True)
    return python


class LlamaCpp:
    """The worker (benchmarks/llamacpp_worker.py) in the llama.cpp venv, the GGUF loaded once;
    `__call__(prompt)` decodes one prompt there."""

    def __init__(self, python: Path, n_ctx: int, max_new: int, threads: int) -> None:
        self.proc = subprocess.Popen([str(python), str(WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
        job = {"gguf": str(bundled_gguf()), "threads": threads, "n_ctx": n_ctx, "max_new": max_new}
        self.version = self._ask(job)["version"]

    def _ask(self, message: object) -> dict:
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the llama.cpp worker ended without an answer")
        return json.loads(line)

    def __call__(self, prompt: list[int]) -> dict:
        return self._ask(prompt)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def run_ours(engine, prompt, references, config: LLMAConfig) -> dict:  # noqa: ANN001
    """Tokens, first-token and total seconds, forwards (events after the prefill) of one prompt."""
    start = time.perf_counter()
    first = None
    tokens: list[int] = []
    forwards = 0
    for event in engine.stream(prompt, references, config, history=AnswerHistory()):
        if event.new_tokens and first is None:
            first = time.perf_counter() - start
        tokens += event.new_tokens
        forwards += event.step > 0
    return {"tokens": tokens, "first_s": first, "total_s": time.perf_counter() - start, "forwards": forwards}


def summary(runs: list[dict]) -> dict:
    tokens = sum(len(r["tokens"]) for r in runs)
    total = sum(r["total_s"] for r in runs)
    after = total - sum(r["first_s"] for r in runs)
    return {"tokens": tokens, "end_to_end_tok_s": round(tokens / total, 2),
            "decode_tok_s": round(sum(len(r["tokens"]) - 1 for r in runs) / after, 2),
            "first_token_s": round(sum(r["first_s"] for r in runs) / len(runs), 3), "total_s": round(total, 2)}


def compare(a: list[dict], b: list[dict]) -> dict:
    div = [_first_divergence(x["tokens"], y["tokens"]) for x, y in zip(a, b)]
    return {"identical": sum(d is None for d in div), "of": len(div), "first_divergences": div}


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/llma-rag/rag.jsonl"))
    ap.add_argument("--limit", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--venv", type=Path, default=cache_root() / f"llamacpp-{LLAMA_CPP_VERSION}")
    ap.add_argument("--no-fp32", action="store_true", help="skip the fp32 greedy run (agreement with fp32)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/cpu_vs_llamacpp"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    python = llama_python(args.venv)
    loaded = load_model(None, device="cpu")
    _, bench = bench_prompts(loaded.tokenizer, args.data, args.limit)
    prompts = [b.prompt for b in bench]
    refs = [b.references for b in bench]
    options = EngineOptions.from_env(os.environ)
    config = LLMAConfig(max_new_tokens=args.max_new_tokens, repetition_stop=False)
    load_before = uptime()
    engine = open_engine(loaded, options)
    weights = "engine"
    if isinstance(engine, BatchEngine):
        w = engine.runner.weights
        weights = type(w).__name__
        if isinstance(w, Int4Weights):
            weights += (" (elementwise work, attention of decoding rows and head: "
                        f"{'C, llma.cpu.glue; 8-bit head' if w.glue is not None else 'torch ops; bf16 head'})")
    llama = LlamaCpp(python, max(map(len, prompts)) + args.max_new_tokens + 8, args.max_new_tokens, args.threads)
    runs: dict[str, list[dict]] = {"llamacpp_greedy": [], "greedy": [], "llma": []}
    for i, (prompt, references) in enumerate(zip(prompts, refs)):  # interleaved: the load hits all alike
        runs["llamacpp_greedy"].append(llama(prompt))
        runs["greedy"].append(run_ours(engine, prompt, None, config.greedy()))
        runs["llma"].append(run_ours(engine, prompt, references, config))
        logging.info("prompt %d: %s", i, {k: round(r[-1]["total_s"], 2) for k, r in runs.items()})
    llama.close()
    engine.close()
    if not args.no_fp32:
        full = open_engine(loaded, replace(options, weights="full"))
        runs["greedy_fp32"] = [run_ours(full, p, None, config.greedy()) for p in prompts]
        full.close()
    report = {
        "device": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
                  f"{torch.__version__}, {args.threads} threads",
        "commit": os.environ.get("LLMA_GIT_COMMIT") or commit(), "uptime_before": load_before,
        "uptime_after": uptime(), "llama_cpp_python": llama.version, "engine": type(engine).__name__,
        "weights": weights, "prompts": len(prompts), "max_new_tokens": args.max_new_tokens,
        "methods": {name: summary(r) for name, r in runs.items()},
        "forwards": {name: sum(x.get("forwards", 0) for x in r) for name, r in runs.items()},
        "llma_vs_greedy": compare(runs["llma"], runs["greedy"]),
        "greedy_vs_llamacpp": compare(runs["greedy"], runs["llamacpp_greedy"]),
    }
    if "greedy_fp32" in runs:
        report["greedy_vs_fp32"] = compare(runs["greedy"], runs["greedy_fp32"])
    m = report["methods"]
    report["ratios"] = {
        "greedy_decode_vs_llamacpp": round(m["greedy"]["decode_tok_s"] / m["llamacpp_greedy"]["decode_tok_s"], 3),
        "llma_vs_greedy_decode": round(m["llma"]["decode_tok_s"] / m["greedy"]["decode_tok_s"], 3),
        "llma_vs_greedy_end_to_end": round(m["llma"]["end_to_end_tok_s"] / m["greedy"]["end_to_end_tok_s"], 3),
        "llma_vs_llamacpp_end_to_end": round(m["llma"]["end_to_end_tok_s"] / m["llamacpp_greedy"]["end_to_end_tok_s"], 3),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(markdown(report))
    print(json.dumps({k: report[k] for k in ("methods", "ratios", "llma_vs_greedy")}, indent=1))


def markdown(r: dict) -> str:
    lines = [f"# CPU: our engine beside llama.cpp ({r['prompts']} rag.jsonl prompts, greedy, "
             f"{r['max_new_tokens']} new tokens)", "",
             f"Device: {r['device']}. Commit {r['commit']}. llama-cpp-python {r['llama_cpp_python']}. "
             f"Ours: {r['engine']} with {r['weights']}.", "",
             f"Load before: `{r['uptime_before']}`; after: `{r['uptime_after']}`.", "",
             "| method | decode tok/s (after 1st token) | end-to-end tok/s | first token s | tokens | forwards |",
             "|---|---|---|---|---|---|"]
    for name, s in r["methods"].items():
        lines.append(f"| {name} | {s['decode_tok_s']} | {s['end_to_end_tok_s']} | {s['first_token_s']} | "
                     f"{s['tokens']} | {r['forwards'].get(name, '')} |")
    lines += ["", "Ratios: " + ", ".join(f"{k} {v}x" for k, v in r["ratios"].items()), ""]
    for key in ("llma_vs_greedy", "greedy_vs_llamacpp", "greedy_vs_fp32"):
        if key in r:
            c = r[key]
            lines.append(f"- {key}: {c['identical']}/{c['of']} identical; first divergences "
                         f"{c['first_divergences']}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
