"""GPU measurements beside `python -m benchmarks.decode` (issue #3): bit-identity probe, verify-step cost.

    python -m benchmarks.gpu_steps --data ../shared/data/llma-rag/rag.jsonl \
        --json benchmarks/results/gpu_steps.json [--attention sdpa|flash|split]

1. Probe (default model): logits of the same tokens fed one per step, all in one forward, and in
   uneven chunks must be bitwise equal through the static backend (eager and graphs).
2. Cost of one verify step vs query block size (1..64): HF eager forward of n tokens on a DynamicCache,
   our static step eager and with CUDA graphs; for the default model and a 7B-shaped Llama with
   random weights (bf16).
3. Forced decoding (rag.jsonl targets) with the 7B-shaped model: our greedy vs LLMA, graphs.
The probe and the step sweeps run the static backend with `--attention` (default sdpa) and without
torch.compile; `--choose` instead picks the kernel and compile setting that run_gpu.sh then uses.
"""
from __future__ import annotations

import argparse
import json
import os
import logging
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path

import torch
import transformers
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

from benchmarks.data import bench_prompts
from benchmarks.report import commit, steps_markdown, write_report
from benchmarks.runners import sync
from llma.engine import HF_DEFAULTS, Engine, LLMAConfig
from llma.history import AnswerHistory
from llma.loading import LoadedModel, load_model
from llma.options import EngineOptions
from llma.static import StaticBackend
from llma.static.inputs import StepLayout
from llma.verifier import ForcedVerifier

log = logging.getLogger(__name__)
SIZES = (1, 2, 4, 8, 16, 24, 32, 48, 64)
ATTENTION = "sdpa"  # --attention's default: the kernel of the probe and the step sweeps
SEVEN_B = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=32, max_position_embeddings=4096)
SMOLLM2_135M = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                    num_key_value_heads=3, max_position_embeddings=8192, tie_word_embeddings=True)
RANDOM_SHAPES = {"7b": SEVEN_B, "135m": SMOLLM2_135M}  # serve_batch's and gpu_batch_steps' --random
SMALL = dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=4096)  # --big small


def timed(fn, device: torch.device, reps: int = 20, warmup: int = 3) -> float:
    """Median wall milliseconds of fn(), synchronised before and after each call."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return round(statistics.median(times), 4)


def block_runner(backend: StaticBackend, block: int, length: int):
    """One static step of `block` query slots at position `length - block` (attending to ~`length` keys)."""
    pos = max(0, length - block)
    length = backend.attention_length(max(length, block))
    layout = StepLayout(block, backend.cache_copies)
    ids = torch.randint(0, backend.weights.embed.shape[0], (backend.cache_copies * block,),
                        generator=torch.Generator().manual_seed(block))
    inp = torch.tensor(layout.flat(ids.tolist(), pos))
    if backend.graphs:
        captured = backend.step_graph(layout, length, pos)
        captured.inp.copy_(inp)
        return captured.graph.replay
    inp = inp.to(backend.device)
    return lambda: backend.step(inp, layout, length)


@torch.inference_mode()
def hf_runner(model, prompt: list[int], n: int):
    """HF eager forward of n new tokens on a DynamicCache holding `prompt`; the cache is cropped back."""
    cache = DynamicCache()
    model(input_ids=torch.tensor([prompt], device=model.device), past_key_values=cache, use_cache=True)
    ids = torch.randint(0, model.config.vocab_size, (1, n), device=model.device)

    @torch.inference_mode()
    def run() -> None:
        model(input_ids=ids, past_key_values=cache, use_cache=True)
        cache.crop(-n)

    return run


def step_costs(model, prompt: list[int], device: torch.device, length: int, sizes=SIZES, reps: int = 20,
               attention: str = ATTENTION) -> dict:
    backends = {"static-graphs": True, "static": False} if device.type == "cuda" else {"static": False}
    rows = {name: {} for name in ("hf_eager", *backends)}
    prefill_ms = {}
    for n in sizes:
        rows["hf_eager"][n] = timed(hf_runner(model, prompt, n), device, reps=max(3, reps // 4))
    for name, graphs in backends.items():
        backend = StaticBackend(model, graphs=graphs, max_len=length, attention=attention)
        with torch.no_grad():
            prefill_ms[name] = timed(partial(backend.prefill, prompt), device, reps=reps)
            for n in sizes:
                rows[name][n] = timed(block_runner(backend, n, length), device, reps=reps)
        del backend
    return {"attention_length": length, "prompt_tokens_for_hf": len(prompt), "ms_per_step": rows,
            "prefill_ms": prefill_ms}


@torch.no_grad()
def identity_probe(backend: StaticBackend, prompt: list[int], more: list[int]) -> dict:
    backend.reserve(len(more))
    backend.prefill(prompt)
    one = torch.cat([backend.forward([t]) for t in more])
    backend.trim(len(prompt))
    together = backend.forward(more)
    backend.trim(len(prompt))
    cuts = [0, 3, 10, 11, 30, len(more)]
    chunks = torch.cat([backend.forward(more[a:b]) for a, b in zip(cuts, cuts[1:]) if b > a])
    return {"graphs": backend.graphs, "attention": backend.attention, "tokens": len(more),
            "block": backend.block,
            "one_by_one_equals_one_forward": torch.equal(one, together),
            "one_by_one_equals_chunks": torch.equal(one, chunks),
            "max_abs_diff": (one - together).abs().max().item()}


@torch.no_grad()
def choose(loaded: LoadedModel, prompt: list[int], more: list[int]) -> dict:
    """Attention kernel and torch.compile for the graphs: the fastest variant whose block rows are
    bitwise equal to one-token steps on a real prompt (printed as a CHOICE line for run_gpu.sh)."""
    rows: list[dict] = []
    variants = [("split", False), ("split", True), ("flash", False), ("flash", True), ("sdpa", False),
                ("sdpa", True)]
    for attention, compiled in variants:
        works = [r for r in rows if r.get("bitwise")]
        if compiled and not any(r["attention"] == attention for r in works):
            continue  # compile only a kernel that works
        if attention == "sdpa" and compiled and any(r["attention"] in ("flash", "split") for r in works):
            continue  # sdpa + compile only where the others failed (each compile costs tens of seconds)
        t0 = time.perf_counter()
        try:
            backend = StaticBackend(loaded.model, graphs=True, attention=attention, compile=compiled)
            if backend.attention != attention:
                raise RuntimeError(f"{attention} unusable")
            probe = identity_probe(backend, prompt, more)
            backend.prefill(prompt)
            step_ms = timed(lambda: (backend.forward([7]), backend.trim(len(prompt))), loaded.device, reps=50)
            ok = probe["one_by_one_equals_one_forward"] and probe["one_by_one_equals_chunks"]
            rows.append({"attention": attention, "compile": compiled, "bitwise": ok,
                         "step_ms": step_ms,
                         "setup_s": round(time.perf_counter() - t0, 1), "attention_length": backend.key_length})
        except Exception as err:  # noqa: BLE001
            rows.append({"attention": attention, "compile": compiled, "error": str(err)[:300]})
        print(rows[-1], flush=True)
    good = [r for r in rows if r.get("bitwise")] or [{"attention": "sdpa", "compile": False}]
    best = min(good, key=lambda r: r.get("step_ms", 0))
    print(f"CHOICE attention={best['attention']} compile={int(best['compile'])}", flush=True)
    return {"prompt_tokens": len(prompt), "variants": rows, "choice": best}


def forced_decoding(loaded: LoadedModel, prompts, max_new: int, backend: str, rows: Sequence[int] = (),
                    tree: Sequence[int] = ()) -> dict:
    """Our greedy and LLMA (defaults and two earlier settings); with `rows`, greedy+rowsN and
    llma+rowsN through a backend verifying N drafts side by side (greedy there runs N rows too);
    with `tree`, greedy+treeN and llma+treeN, N drafts packed into the one block."""
    options = EngineOptions.from_env(os.environ, backend=backend)
    engine = Engine(loaded, options=options)
    configs = {"greedy": LLMAConfig(enabled=False), "llma": LLMAConfig(),  # llma: the backend's defaults
               "llma_hf_defaults": HF_DEFAULTS.apply(LLMAConfig()),
               "llma_k32": LLMAConfig(min_n=1, k=32, adaptive=False, policy="recent")}
    runs = [(name, engine, config) for name, config in configs.items()]
    for option, n in [*(("rows", n) for n in rows), *(("tree", n) for n in tree)]:
        field = "cache_copies" if option == "rows" else "packed_drafts"
        several = Engine(loaded, options=replace(options, **{field: n}))
        runs += [(f"greedy+{option}{n}", several, LLMAConfig(enabled=False)),
                 (f"llma+{option}{n}", several, LLMAConfig())]
    for e in {id(e): e for _, e, _ in runs}.values():
        for p in prompts:  # untimed: each prefill shape's CUDA graph is captured here, not in a timed run
            e.backend.prefill(p.prompt)
    results = {}
    for name, engine, config in runs:
        tokens = forwards = 0
        wall = 0.0
        history = AnswerHistory()  # each method learns from its own answers only
        for i, p in enumerate([prompts[0], *prompts]):  # the first is an untimed warm-up
            target = p.target[:max_new]
            cfg = replace(config, max_new_tokens=len(target))
            if i == 1:
                history.clear()  # the warm-up's answer is the first prompt's own
            sync(loaded.device)
            t0 = time.perf_counter()
            result = engine.generate(p.prompt, p.references, cfg, ForcedVerifier(target), history)
            sync(loaded.device)
            if i:
                wall += time.perf_counter() - t0
                tokens += len(result.tokens)
                forwards += result.stats.forward_passes
        results[name] = {"tokens": tokens, "wall_s": round(wall, 3), "tokens_per_s": round(tokens / wall, 1),
                         "tokens_per_forward": round(tokens / forwards, 3)}
    for name, row in results.items():
        row["speedup_vs_greedy"] = round(row["tokens_per_s"] / results["greedy"]["tokens_per_s"], 3)
        own = results["greedy+" + name.split("+")[1] if "+" in name else "greedy"]
        row["speedup_vs_own_greedy"] = round(row["tokens_per_s"] / own["tokens_per_s"], 3)
    return {"backend": getattr(runs[0][1].backend, "name", "hf"), "n_prompts": len(prompts),
            "max_new_tokens": max_new, "methods": results}


def random_model(model_cls, config, name: str, device: torch.device, dtype: torch.dtype) -> LoadedModel:
    """`model_cls(config)` with random weights, made on `device` in `dtype`; no end-of-sequence token."""
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = model_cls(config).eval()
    finally:
        torch.set_default_dtype(previous)
    model.generation_config.eos_token_id = None
    return LoadedModel(model, None, name, device, dtype)


def random_llama(shape: dict, vocab: int, device: torch.device, dtype: torch.dtype) -> LoadedModel:
    config = LlamaConfig(vocab_size=vocab, **shape, bos_token_id=None, eos_token_id=None, pad_token_id=None)
    return random_model(LlamaForCausalLM, config, "random-llama-" + "x".join(str(v) for v in shape.values()),
                        device, dtype)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ap = argparse.ArgumentParser(prog="python -m benchmarks.gpu_steps", description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="rag.jsonl (prompts and forced targets)")
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--length", type=int, default=2048, help="attention length of the timed steps")
    ap.add_argument("--big", choices=("7b", "none", "small"), default="7b", help="the random-weight Llama")
    ap.add_argument("--prompts", type=int, default=10, help="forced-decoding prompts for the big model")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)), help="query block sizes to time")
    ap.add_argument("--choose", action="store_true", help="only choose the attention kernel and compile")
    ap.add_argument("--rows", default="", help="also forced-decode with N drafts per step, e.g. 4,8")
    ap.add_argument("--tree", default="", help="also forced-decode with N drafts packed per block, e.g. 6")
    ap.add_argument("--attention", default=ATTENTION,
                    help="the static backend's attention kernel in the probe and the step sweeps")
    args = ap.parse_args(argv)
    loaded = load_model(device=args.device)
    dev = loaded.device
    _, prompts = bench_prompts(loaded.tokenizer, args.data, args.prompts)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    command_args = sys.argv[1:] if argv is None else argv
    report: dict = {"device": f"{dev.type} ({name})", "dtype": str(loaded.dtype),
                    "command": "python -m benchmarks.gpu_steps " + " ".join(command_args),
                    "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
                    "commit": commit()}
    probe_tokens = prompts[0].target[:40]
    if args.choose:
        report["choose"] = choose(loaded, prompts[0].prompt, probe_tokens)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        return 0
    modes = (True, False) if dev.type == "cuda" else (False,)
    attention = args.attention
    report["identity_probe"] = [identity_probe(StaticBackend(loaded.model, graphs=g, attention=attention),
                                               prompts[0].prompt, probe_tokens) for g in modes]
    print(json.dumps(report["identity_probe"]), flush=True)
    sizes = [int(n) for n in args.sizes.split(",")]
    report["step_costs"] = {loaded.name: step_costs(loaded.model, prompts[0].prompt, dev, args.length, sizes,
                                                    attention=attention)}
    print(steps_markdown(report), flush=True)
    if args.big != "none":
        shape = SEVEN_B if args.big == "7b" else SMALL
        big = random_llama(shape, loaded.model.config.vocab_size, dev, loaded.dtype)
        del loaded
        report["step_costs"][big.name] = step_costs(big.model, prompts[0].prompt, dev, args.length, sizes,
                                                    reps=10, attention=attention)
        print(steps_markdown(report), flush=True)
        backend = "static-graphs" if dev.type == "cuda" else "static"
        rows = [int(n) for n in args.rows.split(",") if n]
        tree = [int(n) for n in args.tree.split(",") if n]
        runs = forced_decoding(big, prompts, args.max_new_tokens, backend, rows, tree)
        report["forced_decoding"] = {big.name: runs}
    print(steps_markdown(report))
    write_report(args.json, report, steps_markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
