"""Predicted Outputs on an editing task, through the real server and the official `openai` client.

    python -m benchmarks.predicted_outputs --data ../shared/data/llma-rag/cnndm.jsonl --articles 4 \
        --max-tokens 64 --out benchmarks/results/predicted_outputs_cpu.json
    python -m benchmarks.predicted_outputs --data .gpu/data/cnndm.jsonl --device cuda --articles 40 \
        --max-tokens 256 --out $OUT/predicted_outputs_gpu.json

Each CNN/DM article (the "### Input:" of cnndm.jsonl, cut to --article-chars at a sentence end) is
sent with a small editing instruction; the prediction is the article itself, the text to be revised,
as OpenAI's Predicted Outputs takes it. Every article runs twice side by side, without and with the
prediction (the order alternating), on the same started server (`python -m rag.serve`, or --url):
wall time, tokens per second, accepted and rejected prediction tokens, and whether the two texts are
identical (they must be: LLMA is lossless, greedy or seeded sampling). The speedup is the ratio of
the side-by-side totals over the same articles. Results: JSON and a .md beside it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import openai

from benchmarks.report import commit, write_report
from benchmarks.serve_load import ROOT, device_name, start_server

INSTRUCTION = ("Fix any spelling mistakes in the following article and return the article otherwise "
               "unchanged. Reply with the article only.")


def load_articles(path: Path, limit: int, chars: int) -> list[str]:
    """The first `limit` articles of cnndm.jsonl, each cut to at most `chars` characters at a sentence end."""
    articles = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            query = json.loads(line)["query"]
            text = query.split("### Input:\n", 1)[-1].split("\n\n### Response:", 1)[0].strip()
            if len(text) > chars:
                cut = text[:chars]
                text = cut[: cut.rfind(". ") + 1] if ". " in cut else cut
            articles.append(text)
            if len(articles) == limit:
                break
    return articles


def ask(client: openai.OpenAI, model: str, article: str, predicted: bool, args: argparse.Namespace) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if predicted:
        kwargs["prediction"] = {"type": "content", "content": article}
    if args.temperature > 0:
        kwargs.update(temperature=args.temperature, seed=args.seed)
    else:
        kwargs["temperature"] = 0
    started = time.perf_counter()
    reply = client.chat.completions.create(
        model=model, max_tokens=args.max_tokens,
        messages=[{"role": "user", "content": f"{INSTRUCTION}\n\n{article}"}], **kwargs)
    wall = time.perf_counter() - started
    details = reply.usage.completion_tokens_details
    stats = (reply.model_extra or {}).get("llma", {}).get("choices", [{}])[0].get("stats", {})
    tokens = reply.usage.completion_tokens
    return {"wall_s": round(wall, 4), "completion_tokens": tokens, "prompt_tokens": reply.usage.prompt_tokens,
            "tok_s": round(tokens / wall, 2), "forward_passes": stats.get("forward_passes"),
            "accepted_prediction_tokens": details.accepted_prediction_tokens if details else 0,
            "rejected_prediction_tokens": details.rejected_prediction_tokens if details else 0,
            "finish_reason": reply.choices[0].finish_reason, "text": reply.choices[0].message.content}


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    plain = sum(r["without"]["wall_s"] for r in rows)
    predicted = sum(r["with"]["wall_s"] for r in rows)
    tokens = [sum(r[k]["completion_tokens"] for r in rows) for k in ("without", "with")]
    accepted = sum(r["with"]["accepted_prediction_tokens"] for r in rows)
    rejected = sum(r["with"]["rejected_prediction_tokens"] for r in rows)
    forwards = [sum(r[k]["forward_passes"] or 0 for r in rows) for k in ("without", "with")]
    return {
        "requests_each": len(rows), "identical": f"{sum(r['identical'] for r in rows)}/{len(rows)}",
        "wall_s_without": round(plain, 3), "wall_s_with": round(predicted, 3),
        "speedup": round(plain / predicted, 3) if predicted else None,
        "tok_s_without": round(tokens[0] / plain, 2) if plain else None,
        "tok_s_with": round(tokens[1] / predicted, 2) if predicted else None,
        "completion_tokens_without": tokens[0], "completion_tokens_with": tokens[1],
        "accepted_prediction_tokens": accepted, "rejected_prediction_tokens": rejected,
        "accepted_share_of_output": round(accepted / tokens[1], 3) if tokens[1] else None,
        "forward_passes_without": forwards[0], "forward_passes_with": forwards[1],
    }


def markdown(report: dict[str, Any]) -> str:
    s = report["summary"]
    lines = [
        f"# Predicted Outputs: editing CNN/DM articles ({report['device']})", "",
        f"`{report['command']}`, commit {report.get('commit') or 'not recorded'}; {report['settings']}.",
        f"Instruction: \"{INSTRUCTION}\"; the prediction is the article itself. Each article without and "
        "with the prediction, side by side on the same server (order alternating), through the official "
        "`openai` client.", "",
        "| | wall s (total) | tok/s | forward passes | accepted / rejected prediction tokens | identical |",
        "|---|---|---|---|---|---|",
        f"| without prediction | {s['wall_s_without']} | {s['tok_s_without']} | {s['forward_passes_without']} | - | |",
        f"| with prediction | {s['wall_s_with']} | {s['tok_s_with']} | {s['forward_passes_with']} "
        f"| {s['accepted_prediction_tokens']} / {s['rejected_prediction_tokens']} | {s['identical']} |", "",
        f"**Speedup (total without / total with, same articles): {s['speedup']}x.** Accepted prediction "
        f"tokens are {s['accepted_share_of_output']} of the output.", "",
        "| article | tokens | wall s without / with | tok/s without / with | accepted / rejected | identical |",
        "|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(report["requests"]):
        a, b = r["without"], r["with"]
        lines.append(f"| {i} | {b['completion_tokens']} | {a['wall_s']} / {b['wall_s']} | {a['tok_s']} / {b['tok_s']} "
                     f"| {b['accepted_prediction_tokens']} / {b['rejected_prediction_tokens']} | "
                     f"{'yes' if r['identical'] else 'NO'} |")
    lines += ["", f"Load average (1, 5, 15 min) before and after: {report['load_average_before_after']}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.predicted_outputs")
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "llma-rag" / "cnndm.jsonl"))
    p.add_argument("--url", default=None, help="a running server (default: start one)")
    p.add_argument("--api-key", default=os.environ.get("LLMA_API_KEY"))
    p.add_argument("--model", default=None, help="the model to start the server with (default: bundled)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default=None, help="default: float32 on CPU, bfloat16 on CUDA")
    p.add_argument("--articles", type=int, default=4)
    p.add_argument("--article-chars", type=int, default=1500)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0, help="above 0: seeded sampling (--seed)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    code_commit = commit()  # now: the code that runs, whatever the tree becomes during the run
    articles = load_articles(Path(args.data), args.articles, args.article_chars)
    dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    proc, url = (None, args.url) if args.url else start_server(args.model, args.device, dtype)
    load_before = os.getloadavg()
    rows = []
    try:
        client = openai.OpenAI(base_url=url.rstrip("/") + "/v1", api_key=args.api_key or "none", max_retries=0,
                               timeout=1800)
        model = client.models.list().data[0].id
        ask(client, model, articles[0][:200], True, args)  # warm-up, not counted
        for i, article in enumerate(articles):
            order = (False, True) if i % 2 == 0 else (True, False)
            runs = {predicted: ask(client, model, article, predicted, args) for predicted in order}
            row = {"without": runs[False], "with": runs[True], "identical": runs[False]["text"] == runs[True]["text"],
                   "article_chars": len(article)}
            rows.append(row)
            print(json.dumps({"article": i, "identical": row["identical"], "tokens": runs[True]["completion_tokens"],
                              "wall_s": [runs[False]["wall_s"], runs[True]["wall_s"]],
                              "accepted": runs[True]["accepted_prediction_tokens"]}), flush=True)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
    sampling = f"temperature {args.temperature}, seed {args.seed}" if args.temperature > 0 else "greedy"
    report = {
        "device": device_name(args.device) if not args.url else f"remote: {url}", "dtype": dtype,
        "commit": code_commit, "engine_options": {k: v for k, v in os.environ.items() if k.startswith("LLMA_")
                                               and k != "LLMA_API_KEY"},
        "settings": f"{len(articles)} articles of at most {args.article_chars} characters, max_tokens "
                    f"{args.max_tokens}, {sampling}",
        "command": "python -m benchmarks.predicted_outputs " + " ".join(argv if argv is not None else sys.argv[1:]),
        "load_average_before_after": [[round(x, 2) for x in load_before], [round(x, 2) for x in os.getloadavg()]],
        "summary": summarise(rows), "requests": rows,
    }
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"predicted_outputs_{args.device}.json"
    write_report(out, report, markdown(report))
    print(json.dumps({"device": report["device"], "commit": report["commit"], **report["summary"]}))
    return 0 if all(r["identical"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
