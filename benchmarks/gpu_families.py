"""GPU: the static backend on Qwen3 and Gemma 3 at real shapes (issue #25), random weights, bf16.

    python -m benchmarks.gpu_families --data .gpu/data/rag.jsonl --out benchmarks/results \
        [--family gemma3_4b,qwen3_8b] [--prompts 6] [--max-new-tokens 128]

Per family, a random-weight model shaped as the real config (SHAPES), the default model's tokenizer
for the rag.jsonl prompts (token ids only matter; the vocabulary is the real model's):
1. Bit-identity probe (gpu_steps.identity_probe) through the engine's default static backend.
2. Verify-step cost by query block size: HF eager against the static backend (gpu_steps.step_costs).
3. The HF loop's greedy against the static backend's, forced on the rag.jsonl targets of the first
   `--hf-prompts` prompts: ms per generated token, the same prompts for both.
4. Forced decoding of every prompt's target through the default engine (gpu_steps.forced_decoding):
   LLMA's speedup over the same engine's greedy.
5. Identity: free greedy, then LLMA with that answer among the references, through the same engine:
   the share of prompts whose outputs are identical (random weights: the answer is the only copy).
Writes gpu_<family>.json and .md under --out. `--tiny`: the same families at toy sizes (CPU checks).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
import transformers
from transformers import Gemma3ForCausalLM, Gemma3TextConfig, Qwen3Config, Qwen3ForCausalLM

from benchmarks.data import bench_prompts
from benchmarks.gpu_steps import forced_decoding, identity_probe, random_model, step_costs
from benchmarks.report import commit, steps_markdown, write_report
from benchmarks.runners import sync
from llma.engine import Engine, LLMAConfig
from llma.loading import LoadedModel, load_model
from llma.options import EngineOptions
from llma.verifier import ForcedVerifier

log = logging.getLogger(__name__)

# The real configs' shapes: Qwen/Qwen3-8B and google/gemma-3-4b-it's text model.
SHAPES = {
    "qwen3_8b": (Qwen3ForCausalLM, Qwen3Config, dict(
        vocab_size=151936, hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
        num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=40960,
        rope_theta=1e6, rms_norm_eps=1e-6, tie_word_embeddings=False)),
    "gemma3_4b": (Gemma3ForCausalLM, Gemma3TextConfig, dict(
        vocab_size=262208, hidden_size=2560, intermediate_size=10240, num_hidden_layers=34,
        num_attention_heads=8, num_key_value_heads=4, head_dim=256, query_pre_attn_scalar=256,
        sliding_window=1024, sliding_window_pattern=6, rope_theta=1e6, rope_local_base_freq=1e4,
        rope_scaling={"rope_type": "linear", "factor": 8.0}, max_position_embeddings=131072,
        rms_norm_eps=1e-6, tie_word_embeddings=True)),
}
TINY = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=6, num_attention_heads=4,
            num_key_value_heads=2, head_dim=32, sliding_window=32)  # --tiny: toy sizes, a short window


def family_model(name: str, vocab: int | None, device: torch.device, dtype: torch.dtype,
                 tiny: bool) -> LoadedModel:
    """A random-weight model of family `name` (SHAPES); `vocab` replaces the real vocabulary (--tiny)."""
    model_cls, config_cls, shape = SHAPES[name]
    shape = {**shape, **({k: v for k, v in TINY.items() if "gemma" in name or k != "sliding_window"}
                         if tiny else {})}
    if vocab is not None:
        shape["vocab_size"] = vocab
    config = config_cls(**shape, bos_token_id=None, eos_token_id=None, pad_token_id=None)
    return random_model(model_cls, config, f"random-{name}" + ("-tiny" if tiny else ""), device, dtype)


def forced_ms_per_token(engine: Engine, prompts, max_new: int) -> dict:
    """Greedy forced on each prompt's target: wall ms per generated token (after one untimed warm-up)."""
    tokens, wall = 0, 0.0
    for i, p in enumerate([prompts[0], *prompts]):
        target = p.target[:max_new]
        config = LLMAConfig(enabled=False, max_new_tokens=len(target))
        sync(engine.loaded.device)
        t0 = time.perf_counter()
        result = engine.generate(p.prompt, p.references, config, ForcedVerifier(target))
        sync(engine.loaded.device)
        if i:
            tokens += len(result.tokens)
            wall += time.perf_counter() - t0
    return {"tokens": tokens, "ms_per_token": round(1e3 * wall / tokens, 3)}


def identity(engine: Engine, prompts, max_new: int) -> dict:
    """Free greedy, then LLMA with the greedy answer among the prompt's references: identical outputs."""
    same, accepted, forwards, tokens = 0, 0, 0, 0
    for p in prompts:
        config = LLMAConfig(max_new_tokens=max_new, repetition_stop=False)
        greedy = engine.generate(p.prompt, p.references, config.greedy()).tokens
        llma = engine.generate(p.prompt, {**p.references, "answer": greedy}, config)
        same += llma.tokens == greedy
        accepted += llma.stats.accepted_tokens
        forwards += llma.stats.forward_passes
        tokens += len(llma.tokens)
    return {"prompts": len(prompts), "identical": same, "identity_rate": same / len(prompts),
            "llma_tokens_per_forward": round(tokens / max(forwards, 1), 3), "accepted_tokens": accepted}


def markdown(report: dict) -> str:
    hf, ours = report["hf_loop"], report["static_greedy_same_prompts"]
    ident = report["identity"]
    lines = [steps_markdown(report).rstrip("\n").rsplit("\n", 1)[0].rstrip(), "",
             f"## {report['model']}: shape {report['shape']}", "",
             f"- Prompt lengths (tokens): {report['prompt_tokens']}; engine options: {report['options']}",
             f"- Greedy, forced, first {report['hf_prompts']} prompts: HF loop {hf['ms_per_token']} ms/token, "
             f"static backend {ours['ms_per_token']} ms/token: {report['static_vs_hf']}x faster",
             f"- Identity (free greedy vs LLMA with that answer as a reference, same engine): "
             f"{ident['identical']}/{ident['prompts']} identical "
             f"({ident['llma_tokens_per_forward']} tokens per forward)",
             f"- This family's run: {report['wall_s']} s", "",
             f"Commit {report.get('commit') or 'not recorded'}."]
    return "\n".join(lines) + "\n"


def run_family(name: str, args: argparse.Namespace, prompts, vocab: int | None, base: dict) -> dict:
    dev, dtype = torch.device(args.device), getattr(torch, args.dtype)
    t0 = time.perf_counter()
    loaded = family_model(name, vocab, dev, dtype, args.tiny)
    log.info("%s: made in %.1f s", loaded.name, time.perf_counter() - t0)
    backend = "static-graphs" if dev.type == "cuda" else "static"
    options = EngineOptions.from_env(os.environ, backend=backend)
    engine = Engine(loaded, options=options)
    report = {**base, "model": loaded.name, "shape": SHAPES[name][2] if not args.tiny else TINY,
              "options": str(options.resolve(dev.type == "cuda", backend == "static-graphs")),
              "prompt_tokens": [len(p.prompt) for p in prompts], "hf_prompts": args.hf_prompts}
    report["identity_probe"] = [identity_probe(engine.backend, prompts[0].prompt, prompts[0].target[:40])]
    log.info("%s", report["identity_probe"])
    sizes = [int(n) for n in args.sizes.split(",")]
    report["step_costs"] = {loaded.name: step_costs(loaded.model, prompts[0].prompt, dev, args.length, sizes,
                                                    reps=args.reps, attention=engine.backend.attention)}
    first = prompts[: args.hf_prompts]
    report["hf_loop"] = forced_ms_per_token(Engine(loaded, backend="hf"), first, args.max_new_tokens)
    report["static_greedy_same_prompts"] = forced_ms_per_token(engine, first, args.max_new_tokens)
    report["static_vs_hf"] = round(report["hf_loop"]["ms_per_token"]
                                   / report["static_greedy_same_prompts"]["ms_per_token"], 2)
    log.info("HF loop %s, static %s", report["hf_loop"], report["static_greedy_same_prompts"])
    del engine
    report["forced_decoding"] = {loaded.name: forced_decoding(loaded, prompts, args.max_new_tokens, backend)}
    report["identity"] = identity(Engine(loaded, options=options), prompts[: args.identity_prompts],
                                  args.identity_tokens)
    log.info("%s", report["identity"])
    report["wall_s"] = round(time.perf_counter() - t0, 1)  # this family's whole run, the model's making included
    return report


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ap = argparse.ArgumentParser(prog="python -m benchmarks.gpu_families", description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="rag.jsonl (prompts and forced targets)")
    ap.add_argument("--out", type=Path, required=True, help="folder for gpu_<family>.json and .md")
    ap.add_argument("--family", default="gemma3_4b,qwen3_8b", help=f"comma-separated, of {list(SHAPES)}")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--prompts", type=int, default=6, help="forced-decoding prompts")
    ap.add_argument("--hf-prompts", type=int, default=2, help="prompts for the HF loop comparison")
    ap.add_argument("--identity-prompts", type=int, default=4)
    ap.add_argument("--identity-tokens", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--length", type=int, default=2048, help="attention length of the timed steps")
    ap.add_argument("--sizes", default="1,8,32", help="query block sizes of the step sweep")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--tokenizer", type=Path, default=None,
                    help="a saved tokenizer folder instead of loading the default model (no model file needed)")
    ap.add_argument("--tiny", action="store_true", help="toy sizes of the same families (CPU checks)")
    args = ap.parse_args(argv)
    # the default model's tokenizer (the prompts' token ids), or the same saved beside the data
    tokenizer = (transformers.AutoTokenizer.from_pretrained(args.tokenizer) if args.tokenizer
                 else load_model(device="cpu").tokenizer)
    _, prompts = bench_prompts(tokenizer, args.data, args.prompts)
    prompts = [p for p in prompts if p.target]
    dev = torch.device(args.device)
    base = {"device": f"{dev.type} ({torch.cuda.get_device_name(dev) if dev.type == 'cuda' else 'cpu'})",
            "dtype": args.dtype,
            "command": "python -m benchmarks.gpu_families " + " ".join(sys.argv[1:] if argv is None else argv),
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
            "commit": commit()}
    vocab = len(tokenizer) if args.tiny else None
    for name in args.family.split(","):
        report = run_family(name, args, prompts, vocab, base)
        write_report(args.out / f"gpu_{name}.json", report, markdown(report))
        print(markdown(report), flush=True)
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
