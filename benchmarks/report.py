"""The benchmarks' reports: what `python -m benchmarks.decode` measured per method, summarised (speed
ratios, identity), its markdown table and the JSON beside it; the markdown of `python -m
benchmarks.gpu_steps`; and `commit`, the code's commit that every report names."""
from __future__ import annotations

import json
import os
import platform
import subprocess
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class MethodRun:
    """What one method produced over all prompts."""

    outputs: list[list[int]] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    forwards: int = 0
    proposed: int = 0
    accepted: int = 0
    first_token_s: list[float] = field(default_factory=list)  # per prompt (our methods only)

    @property
    def tokens(self) -> int:
        return sum(len(o) for o in self.outputs)


def _first_divergence(a: list[int], b: list[int]) -> int | None:
    at_end = None if len(a) == len(b) else min(len(a), len(b))
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), at_end)


def _tps(run: MethodRun, n: int) -> float:
    """Tokens per second over the first `n` prompts (speed ratios compare the same prompts)."""
    return sum(len(o) for o in run.outputs[:n]) / sum(run.times[:n]) if run.times else 0.0


def _decode_tps(run: MethodRun, n: int) -> float | None:
    """Tokens per second after each prompt's first token, over the first `n` prompts: the decoding
    steps alone, without the prefill (which greedy and LLMA share); None where not measured."""
    if len(run.first_token_s) < n or not n:
        return None
    after = sum(run.times[:n]) - sum(run.first_token_s[:n])
    return sum(len(o) - 1 for o in run.outputs[:n]) / after if after > 0 else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def _own_greedy(name: str) -> str:
    """Greedy through the same backend: greedy@static for llma@static, greedy+rows8 for llma+rows8
    (and greedy+tree6 for llma+tree6)."""
    for mark in ("@", "+"):
        if mark in name:
            return "greedy" + mark + name.split(mark, 1)[1]
    return "greedy"


def summarise(runs: dict[str, MethodRun]) -> list[dict[str, object]]:
    greedy = runs["greedy"]
    hf = runs["hf_greedy"]
    rows = []
    for name, run in runs.items():
        tps = run.tokens / run.wall_s if run.wall_s else 0.0
        n = len(run.outputs)
        own = runs.get(_own_greedy(name), greedy)
        divergences = [_first_divergence(o, g) for o, g in zip(run.outputs, greedy.outputs)]
        decode = _decode_tps(run, n)
        rows.append({
            "method": name,
            "tokens": run.tokens,
            "wall_s": round(run.wall_s, 3),
            "tokens_per_s": round(tps, 2),
            "tokens_per_forward": round(run.tokens / run.forwards, 3) if run.forwards else None,
            "acceptance_rate": round(run.accepted / run.proposed, 3) if run.proposed else None,
            "speedup_vs_greedy": round(_tps(run, n) / _tps(greedy, n), 3),
            "speedup_vs_own_greedy": round(_tps(run, n) / _tps(own, n), 3),
            "ms_per_forward": round(1000 * run.wall_s / run.forwards, 3) if run.forwards else None,
            "speedup_vs_hf_greedy": round(_tps(run, len(hf.outputs)) / _tps(hf, len(hf.outputs)), 3),
            "identical_to_greedy": sum(d is None for d in divergences) / len(divergences),
            "identical_to_own_greedy": sum(o == g for o, g in zip(run.outputs, own.outputs)) / n,
            "prompts": n,
            "identical_to_hf_greedy": sum(o == h for o, h in zip(run.outputs, hf.outputs)) / len(hf.outputs),
            "first_divergence_vs_greedy": [d for d in divergences if d is not None][:10],
            "ms_to_first_token": (round(1000 * sum(run.first_token_s) / len(run.first_token_s), 3)
                                  if run.first_token_s else None),
            "decode_tokens_per_s": round(decode, 2) if decode else None,
            "decode_speedup_vs_greedy": _ratio(decode, _decode_tps(greedy, n)),
        })
    return rows


def markdown(report: dict[str, object]) -> str:
    lines = [f"# {report['dataset']} ({report['mode']} decoding), {report['n_prompts']} prompts",
             "", f"Device: {report['device']}. Command: `{report['command']}`", "",
             f"Our greedy/llma: backend {report.get('backend')}; name@backend: the same through that "
             "backend; name+rowsN: the same with N drafts verified side by side per step; name+treeN: N "
             "drafts packed into the one block (treeN/B: a block of B rows); own greedy: greedy through the "
             "same backend (and rows or tree). Speedups compare the same prompts. After the first token: the "
             "same prompts' tokens after the first over the time after it (the decoding steps, without the "
             "prefill that greedy and LLMA share; on CUDA the first token is timed on the GPU's clock).", "",
             f"LLMA drafting settings (on our backend; what the command leaves unset is the backend's "
             f"default): {report.get('llma_settings', 'not recorded')}", "",
             "| method | prompts | tok/s | tokens/forward | acceptance | speedup vs our greedy | "
             "vs HF greedy | vs own greedy | ms/forward | identical to our greedy | to own greedy | "
             "to HF greedy | ms to first token | after it: tok/s | after it: vs our greedy |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        lines.append(f"| {r['method']} | {r['prompts']} | {r['tokens_per_s']} | "
                     f"{r['tokens_per_forward'] or '-'} | {r['acceptance_rate'] or '-'} | "
                     f"{r['speedup_vs_greedy']}x | {r['speedup_vs_hf_greedy']}x | "
                     f"{r.get('speedup_vs_own_greedy', '-')}x | {r.get('ms_per_forward') or '-'} | "
                     f"{r['identical_to_greedy']:.0%} | {r['identical_to_own_greedy']:.0%} | "
                     f"{r['identical_to_hf_greedy']:.0%} | {r.get('ms_to_first_token') or '-'} | "
                     f"{r.get('decode_tokens_per_s') or '-'} | {_times(r.get('decode_speedup_vs_greedy'))} |")
    lines += ["", f"Commit {report.get('commit') or 'not recorded'}.", "",
              f"Versions: {report['versions']}", ""]
    return "\n".join(lines)


def _times(ratio: float | None) -> str:
    return f"{ratio}x" if ratio else "-"


def steps_markdown(report: dict) -> str:
    """`python -m benchmarks.gpu_steps`'s report as markdown: the probes, the step costs per model and
    block size, the forced decoding runs."""
    lines = [f"# Verify-step cost and bit-identity probe ({report['device']})", "",
             f"Command: `{report['command']}`", ""]
    for probe in report["identity_probe"]:
        mode = f"{'graphs' if probe['graphs'] else 'eager'}, {probe['attention']}"
        lines.append(f"- Probe ({mode}): {probe['tokens']} tokens one per step "
                     f"vs one forward: bitwise equal {probe['one_by_one_equals_one_forward']}, "
                     f"vs uneven chunks {probe['one_by_one_equals_chunks']} (block {probe['block']})")
    for name, costs in report["step_costs"].items():
        table = costs["ms_per_step"]
        lines += ["", f"## {name}: ms per verify step (attention length {costs['attention_length']})", "",
                  "| query tokens | " + " | ".join(table) + " |", "|---" * (len(table) + 1) + "|"]
        for n in next(iter(table.values())):
            lines.append(f"| {n} | " + " | ".join(str(col[n]) for col in table.values()) + " |")
        if "prefill_ms" in costs:
            lines += ["", f"Prefill of the {costs['prompt_tokens_for_hf']}-token prompt, ms: "
                      + ", ".join(f"{k} {v}" for k, v in costs["prefill_ms"].items())]
    for name, run in report.get("forced_decoding", {}).items():
        lines += ["", f"## Forced decoding, {name}: {run['n_prompts']} rag.jsonl prompts, "
                  f"backend {run['backend']}", "",
                  "| method | tok/s | tokens/forward | speedup vs greedy | "
                  "vs own greedy (same rows or tree) |",
                  "|---|---|---|---|---|"]
        for m, r in run["methods"].items():
            lines.append(f"| {m} | {r['tokens_per_s']} | {r['tokens_per_forward']} | "
                         f"{r['speedup_vs_greedy']}x | {r.get('speedup_vs_own_greedy', '-')}x |")
    lines += ["", f"Commit {report.get('commit') or 'not recorded'}."]
    return "\n".join(lines) + "\n"


def cpu_name() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo; the architecture elsewhere) and whether it
    multiplies bf16 natively (llma.cpu.weights.native_bf16: the batch engine's prompt products
    differ by it)."""
    from llma.cpu.weights import native_bf16  # here: this module's import stays free of torch

    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    names = [ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")]
    return (names[0] if names else platform.machine()) + (", native bf16" if native_bf16() else ", no native bf16")


def commit() -> str | None:
    """HEAD's short hash, or None where git cannot tell; LLMA_GIT_COMMIT names it where the tree
    travelled without .git (the GPU machine). The one place that reads LLMA_GIT_COMMIT: the benchmarks
    and reliability/ report through it (this module imports neither torch nor llma)."""
    if os.environ.get("LLMA_GIT_COMMIT"):
        return os.environ["LLMA_GIT_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def print_json(result: dict[str, object], path: str | Path | None) -> None:
    """`result` printed as JSON, and written to `path` if given (the measuring scripts' output)."""
    text = json.dumps(result, indent=1)
    print(text)
    if path:
        Path(path).write_text(text + "\n", encoding="utf-8")


def write_report(path: Path, report: dict[str, object], table: str) -> None:
    """The results as JSON at `path` (with the commit) and the markdown table beside it (.md)."""
    report.setdefault("commit", commit())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    path.with_suffix(".md").write_text(table)
