"""The evaluation's environment line, markdown table and files."""
from __future__ import annotations

import json
import platform
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch

from llma import LoadedModel

_PACKAGES = ("torch", "transformers", "sentence-transformers", "faiss-cpu", "langchain-core")


def environment(loaded: LoadedModel) -> dict[str, Any]:
    device = torch.cuda.get_device_name(loaded.device) if loaded.device.type == "cuda" else \
        f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads"
    return {"device": device, "model": loaded.name, "dtype": str(loaded.dtype).removeprefix("torch."),
            "python": platform.python_version(), "versions": {p: version(p) for p in _PACKAGES}}


def _row(name: str, s: dict[str, Any]) -> str:
    return (f"| {name} | {s['n']} | {s['tokens_per_forward']:.2f} | {s['copied_share']:.0%} | "
            f"{s['speedup_vs_greedy']:.2f}x | {s['identical_to_greedy']:.0%} | {s['mean_new_tokens']:.0f} |")


def markdown(r: dict[str, Any]) -> str:
    env = r["environment"]
    lines = [
        "# RAG evaluation (`python -m rag.eval`)", "",
        f"Command: `{r['command']}`", "",
        f"Device: {env['device']}; model {env['model']} ({env['dtype']}); " +
        ", ".join(f"{k} {v}" for k, v in env["versions"].items()) + f"; runtime {r['runtime_s'] / 60:.1f} min", "",
        f"## SQuAD v1.1 dev ({r['n_questions']} sampled questions, index of all 2,067 paragraphs)", "",
        "| recall@1 | recall@5 | exact match | F1 | gold answer inside the answer |", "|---|---|---|---|---|",
        f"| {r['recall_at_k']['1']:.0%} | {r['recall_at_k']['5']:.0%} | {r['exact_match']:.1%} | {r['f1']:.1%} | "
        f"{r['contains_answer']:.0%} |", "",
        "## LLMA vs greedy decoding (same prompts)", "",
        "| run | questions | tokens / forward | copied | speedup (wall) | identical to greedy | mean new tokens |",
        "|---|---|---|---|---|---|---|",
        _row("SQuAD, references from the prompt's tokens", r["refs_from_prompt"]["from_prompt"]),
        _row("SQuAD, references tokenized alone", r["refs_from_prompt"]["tokenized_alone"]),
    ]
    if r.get("mt_bench_turn2"):
        lines += [_row("MT-Bench turn 2, turn 1 as history reference", r["mt_bench_turn2"]["with_history_refs"]),
                  _row("MT-Bench turn 2, no history references", r["mt_bench_turn2"]["without_history_refs"])]
    share = r["refs_from_prompt"]["share_of_references_tokenized_differently"]
    lines += ["", f"Passages whose token ids differ between the two ways of tokenizing: {share:.0%}.", ""]
    return "\n".join(lines)


def write(result: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    path.with_suffix(".md").write_text(markdown(result), encoding="utf-8")
