"""Does every new prompt length cost host memory for good? The long run's slow RSS growth, isolated.

    python -m reliability.shape_memory --lengths 100 --json benchmarks/results/reliability/shape_memory.json

The default model's prefill, then one decoding step, at `--lengths` prompt lengths never seen
before (in rising order), then at the same lengths again; RSS read with the heap trimmed (freed
pages given back) after each pass. Run four ways: the model called directly at the exact length
(the generic loop before it padded its prompts) and the HFBackend (prompts padded to a multiple of
PREFILL_PAD), each also after one warm-up call at a (padded) length above all of its lengths
("below_longest": is the cost one per new length, or a high-water mark that rises only with the
longest input so far?); the app's one-at-a-time engine (`LLMA_BATCH_SLOTS=0`: its static backend,
a prompt and one new token per call); then a single linear layer of the model's shape over many
new lengths.
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
from collections.abc import Callable
from pathlib import Path

from reliability.report import REPORT_DIR, header, rss_mb, run_markdown, trim_heap, write_report

FIRST_LENGTH = 200  # prompt lengths FIRST_LENGTH, FIRST_LENGTH + 1, ...
MAX_GROWTH_MB = 2.0  # growth over new lengths below the longest seen above this fails the run


def trimmed_rss() -> float:
    gc.collect()
    trim_heap()
    return rss_mb()


def two_passes(run: Callable[[int], None], lengths: range, warm_length: int) -> dict[str, float]:
    """RSS growth over new lengths, then over the same lengths again, after a warm-up call (the
    first call allocates what every call needs) at `warm_length`."""
    run(warm_length)
    start = trimmed_rss()
    for n in lengths:
        run(n)
    after_new = trimmed_rss()
    for n in lengths:
        run(n)
    return {"new_lengths_growth_mb": after_new - start, "same_lengths_again_growth_mb": trimmed_rss() - after_new}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m reliability.shape_memory", description=__doc__.splitlines()[0])
    p.add_argument("--lengths", type=int, default=100, help="new prompt lengths per pass")
    p.add_argument("--linear-lengths", type=int, default=2048, help="new lengths for the single linear layer")
    p.add_argument("--json", type=Path, default=REPORT_DIR / "shape_memory.json")
    args = p.parse_args(argv)
    head = header("python -m reliability.shape_memory " + " ".join(argv if argv is not None else sys.argv[1:]))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    import torch.nn.functional as F

    from llma.backend import PREFILL_PAD, HFBackend, padded_length
    from llma.batch.engine import open_engine
    from llma.engine import LLMAConfig
    from llma.loading import load_model
    from llma.options import EngineOptions

    loaded = load_model(device="cpu")
    model, backend = loaded.model, HFBackend(loaded.model)
    tokens = list(range(100, 100 + FIRST_LENGTH + 5 * args.lengths + PREFILL_PAD))

    @torch.inference_mode()
    def exact(n: int) -> None:  # the model at the prompt's own length, then one step
        out = model(input_ids=torch.tensor([tokens[:n]]), use_cache=True, logits_to_keep=1)
        model(input_ids=torch.tensor([[5]]), past_key_values=out.past_key_values, use_cache=True)

    def padded(n: int) -> None:
        backend.prefill(tokens[:n])
        backend.forward([5])

    serial = open_engine(loaded, EngineOptions(batch_slots=0))  # the app's LLMA_BATCH_SLOTS=0
    one_token = LLMAConfig(max_new_tokens=1)

    def engine(n: int) -> None:
        serial.generate(tokens[:n], config=one_token)

    weight = model.model.layers[0].mlp.up_proj.weight.detach()
    rows = torch.randn(FIRST_LENGTH + args.linear_lengths, weight.shape[1])

    @torch.inference_mode()
    def linear(n: int) -> None:
        F.linear(rows[:n], weight)

    lengths = range(FIRST_LENGTH, FIRST_LENGTH + args.lengths)
    figures: dict[str, object] = {"serial_engine": type(serial).__name__, "prefill_pad": PREFILL_PAD,
                                  "lengths_per_way": args.lengths,
                                  "first_length": lengths.start,
                                  "MKL_DISABLE_FAST_MM": os.environ.get("MKL_DISABLE_FAST_MM", "(unset)")}
    # Each way gets lengths of its own, never seen by the process before.
    ways = (("exact", exact, False), ("exact_below_longest", exact, True), ("padded", padded, False),
            ("padded_below_longest", padded, True), ("serial_engine", engine, False))
    for shift, (name, run, below) in enumerate(ways):
        own = range(lengths.start + shift * args.lengths, lengths.stop + shift * args.lengths)
        warm = padded_length(own.stop, len(tokens)) if below else own.start - 1
        figures.update({f"{name}_{k}": v for k, v in two_passes(run, own, warm).items()})
    # Does the cost of new lengths level off? One linear layer over many new lengths, in quarters.
    span = args.linear_lengths // 4
    linear(FIRST_LENGTH - 1)
    before = trimmed_rss()
    for q in range(4):
        for n in range(FIRST_LENGTH + q * span, FIRST_LENGTH + (q + 1) * span):
            linear(n)
        now = trimmed_rss()
        figures[f"linear_{weight.shape[1]}x{weight.shape[0]}_quarter_{q + 1}_growth_mb"] = now - before
        before = now
    ok = float(figures["exact_below_longest_new_lengths_growth_mb"]) <= MAX_GROWTH_MB  # type: ignore[arg-type]
    report = {**head, "torch_threads": torch.get_num_threads(), "figures": figures, "verdict": "PASS" if ok else "FAIL"}
    markdown = run_markdown(f"Host memory per new prompt length ({args.lengths} lengths)",
                            f"{head['machine']}, CPU fp32, {report['torch_threads']} torch threads", report)
    write_report(args.json, report, markdown)
    print(markdown)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
