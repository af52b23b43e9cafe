"""Load on the OpenAI-compatible server: N concurrent clients (the official `openai` client,
streaming) for M minutes, then every distinct request once more, alone; every output under load
must be identical to its request's output alone.

    python -m benchmarks.serve_load --clients 16 --minutes 2 --data ../shared/data/llma-rag/rag.jsonl
    python -m benchmarks.serve_load --device cuda --clients 64 --minutes 5 --out $OUT/serve_load_gpu.json

Without --url it starts `python -m rag.serve` (--device, fp32 on CPU, bf16 on CUDA) on a free port,
sends --warm-up requests, runs the load, and stops it afterwards.
Each request is a rag.jsonl question with its passages in the prompt and as `references`, in one of
three variants picked at random (seeded): plain, with the first passage as a `prediction`, or
with LLMA off (`llma: false`); all three must give the answer the plain request gives alone.
Results: benchmarks/results/serve_load_<device>.json and .md (device, commit, command).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai

from benchmarks.report import commit, write_report

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = ("plain", "prediction", "llma_off")


@dataclass
class Result:
    prompt: int
    variant: str
    ok: bool
    latency_s: float
    ttft_s: float | None = None
    tokens: int = 0
    text: str = ""
    accepted_prediction: int = 0
    error: str | None = None


@dataclass
class Load:
    results: list[Result] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def load_prompts(path: Path, limit: int, passages: int) -> list[dict[str, Any]]:
    prompts = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            docs = [d.strip() for d in row["docs"][:passages] if d.strip()]
            context = "\n\n".join(f"[{i}] {d}" for i, d in enumerate(docs, 1))
            messages = [{"role": "system", "content": "Answer the question from the passages."},
                        {"role": "user", "content": f"Passages:\n\n{context}\n\nQuestion: {row['query']}"}]
            prompts.append({"messages": messages, "docs": docs})
            if len(prompts) == limit:
                break
    return prompts


def request(client: openai.OpenAI, model: str, prompt: dict[str, Any], variant: str, max_tokens: int) -> dict:
    extra: dict[str, Any] = {"references": [{"id": f"p{i}", "text": d} for i, d in enumerate(prompt["docs"])]}
    kwargs: dict[str, Any] = {}
    if variant == "prediction":
        kwargs["prediction"] = {"type": "content", "content": prompt["docs"][0]}
    if variant == "llma_off":
        extra["llma"] = False
    return dict(model=model, messages=prompt["messages"], max_tokens=max_tokens, temperature=0, stream=True,
                stream_options={"include_usage": True}, extra_body=extra, **kwargs)


def run_one(client: openai.OpenAI, args: dict, index: int, variant: str) -> Result:
    started = time.perf_counter()
    ttft, text, usage = None, [], None
    try:
        for chunk in client.chat.completions.create(**args):
            if chunk.choices and chunk.choices[0].delta.content:
                ttft = ttft if ttft is not None else time.perf_counter() - started
                text.append(chunk.choices[0].delta.content)
            if chunk.usage is not None:
                usage = chunk.usage
    except openai.APIError as err:
        return Result(index, variant, False, time.perf_counter() - started, error=f"{type(err).__name__}: {err}")
    latency = time.perf_counter() - started
    if usage is None:
        return Result(index, variant, False, latency, ttft, error="the stream ended without usage")
    details = usage.completion_tokens_details
    return Result(index, variant, True, latency, ttft, usage.completion_tokens, "".join(text),
                  details.accepted_prediction_tokens if details else 0)


def client_loop(client: openai.OpenAI, model: str, prompts: list, deadline: float, load: Load, seed: int,
                max_tokens: int) -> None:
    rng = random.Random(seed)
    while time.monotonic() < deadline:
        index = rng.randrange(len(prompts))
        variant = rng.choice(VARIANTS)
        result = run_one(client, request(client, model, prompts[index], variant, max_tokens), index, variant)
        with load.lock:
            load.results.append(result)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))], 3)


def start_server(model: str | None, device: str = "cpu", dtype: str = "float32",
                 extra: tuple[str, ...] = ()) -> tuple[subprocess.Popen, str]:
    """`python -m rag.serve` on a free port of 127.0.0.1 (the model loaded and warmed up: it answers
    /v1/models only then); the process and its URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "rag.serve", "--port", str(port), "--device", device, "--dtype", dtype,
           "--max-queue", "256", "--log-level", "warning", *extra]
    if model:
        cmd += ["--model", model]
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    url = f"http://127.0.0.1:{port}"
    client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=5)
    deadline = time.monotonic() + 300
    while True:
        try:
            client.models.list()
            return proc, url
        except openai.APIError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("the server did not start")
            time.sleep(0.5)


def device_name(device: str) -> str:
    """The device in words: the GPU's name on CUDA, else the CPU's."""
    if device.startswith("cuda"):
        import torch

        return f"{device}: {torch.cuda.get_device_name(0)}"
    return f"{device}: {platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def summarise(load: Load, alone: dict[int, Result], duration: float, args: argparse.Namespace) -> dict:
    ok = [r for r in load.results if r.ok]
    checked = [r for r in ok if r.prompt in alone]
    identical = [r for r in checked if alone[r.prompt].ok and r.text == alone[r.prompt].text]
    tokens = sum(r.tokens for r in ok)
    by_variant = {v: {"requests": sum(r.variant == v for r in load.results),
                      "identical": sum(r.variant == v for r in identical)} for v in VARIANTS}
    return {
        "clients": args.clients, "minutes": args.minutes, "max_tokens": args.max_tokens,
        "requests": len(load.results), "failures": len(load.results) - len(ok),
        "errors": sorted({r.error for r in load.results if r.error})[:10],
        "latency_s": {"p50": percentile([r.latency_s for r in ok], 0.5), "p90": percentile([r.latency_s for r in ok], 0.9),
                      "p99": percentile([r.latency_s for r in ok], 0.99), "max": percentile([r.latency_s for r in ok], 1.0)},
        "ttft_s": {"p50": percentile([r.ttft_s for r in ok if r.ttft_s], 0.5),
                   "p99": percentile([r.ttft_s for r in ok if r.ttft_s], 0.99)},
        "completion_tokens": tokens, "duration_s": round(duration, 1),
        "tokens_per_s": round(tokens / duration, 2) if duration else None,
        "accepted_prediction_tokens_mean": round(statistics.mean(
            [r.accepted_prediction for r in ok if r.variant == "prediction"] or [0]), 2),
        "identical_to_alone": f"{len(identical)}/{len(checked)}", "identical_checked": len(identical),
        "identical_of": len(checked), "by_variant": by_variant, "alone_failures": sum(not a.ok for a in alone.values()),
        "distinct_prompts": len({r.prompt for r in load.results}), "distinct_rerun_alone": len(alone),
    }


def markdown(report: dict) -> str:
    lat, ttft = report["latency_s"], report["ttft_s"]
    return "\n".join([
        f"# Server load: {report['clients']} clients, {report['minutes']} min ({report['device']})", "",
        f"`{report['command']}`, commit {report.get('commit') or 'not recorded'}. Each request streams up to "
        f"{report['max_tokens']} tokens, greedy, passages as references (plain / prediction / LLMA off).", "",
        "| requests | failures | latency p50 / p90 / p99 / max (s) | TTFT p50 / p99 (s) | tok/s (all clients) "
        "| identical to the request alone |", "|---|---|---|---|---|---|",
        f"| {report['requests']} | {report['failures']} | {lat['p50']} / {lat['p90']} / {lat['p99']} / {lat['max']} "
        f"| {ttft['p50']} / {ttft['p99']} | {report['tokens_per_s']} | {report['identical_to_alone']} |", "",
        "By variant (requests, identical): " + ", ".join(
            f"{v} {c['requests']}, {c['identical']}" for v, c in report["by_variant"].items()) + ".",
        f"Mean accepted prediction tokens (prediction variant): {report['accepted_prediction_tokens_mean']}.",
        f"Identity: {report['distinct_rerun_alone']} of the {report['distinct_prompts']} distinct prompts re-run "
        f"alone after the load ({'all' if report['distinct_rerun_alone'] == report['distinct_prompts'] else 'a seeded sample'}); "
        f"{report['identical_of']} of the {report['requests'] - report['failures']} successful requests are theirs.",
        f"Server: `{report.get('server_args') or 'default arguments'}`, dtype {report.get('dtype')}, engine variables "
        f"{report.get('engine_options') or 'none'}; generations running at once during the load (/health, once "
        f"a second): max {report['running_during_load']['max']}, mean {report['running_during_load']['mean']}; "
        f"queue max {report['queue_max']}.",
        "Latency includes the wait in the server's queue.",
        f"The machine's load average (1, 5, 15 min) before and after the load: {report['load_average_before_after']} "
        "(other jobs share its cores).",
        ""])


def watch(url: str, stop: threading.Event, seen: list[dict]) -> None:
    """/health once a second while the load runs: the generations running and waiting."""
    import urllib.request

    while not stop.wait(1.0):
        try:
            with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=5) as r:
                seen.append(json.loads(r.read()))
        except OSError:
            pass


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.serve_load")
    p.add_argument("--url", default=None, help="a running server (default: start one)")
    p.add_argument("--api-key", default=os.environ.get("LLMA_API_KEY"))
    p.add_argument("--model", default=None, help="the model to start the server with (default: bundled)")
    p.add_argument("--device", default="cpu", help="the started server's device (cpu, cuda)")
    p.add_argument("--dtype", default=None, help="its dtype (default: float32 on CPU, bfloat16 on CUDA)")
    p.add_argument("--server-args", default="", help="more `python -m rag.serve` arguments, e.g. '--max-running 64'")
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "llma-rag" / "rag.jsonl"))
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--minutes", type=float, default=2.0)
    p.add_argument("--prompts", type=int, default=24)
    p.add_argument("--passages", type=int, default=2)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--warm-up", type=int, default=2, help="requests sent before the load, not counted")
    p.add_argument("--alone-limit", type=int, default=0,
                   help="re-run at most this many distinct prompts alone (a seeded sample; 0: all)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    code_commit = commit()  # now: the code that runs, whatever the tree becomes during the run
    prompts = load_prompts(Path(args.data), args.prompts, args.passages)
    dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    proc, url = None, args.url
    started_at = time.monotonic()
    if url is None:
        proc, url = start_server(args.model, args.device, dtype, tuple(args.server_args.split()))
    server_s = time.monotonic() - started_at
    load_before = os.getloadavg()
    health: list[dict] = []
    try:
        client = openai.OpenAI(base_url=url.rstrip("/") + "/v1", api_key=args.api_key or "none", max_retries=0,
                               timeout=1800)
        model = client.models.list().data[0].id
        for i in range(args.warm_up):
            run_one(client, request(client, model, prompts[i % len(prompts)], VARIANTS[i % 2], args.max_tokens),
                    i, "warm-up")
        load, stop = Load(), threading.Event()
        watcher = threading.Thread(target=watch, args=(url, stop, health), daemon=True)
        watcher.start()
        started = time.monotonic()
        deadline = started + args.minutes * 60
        threads = [threading.Thread(target=client_loop, args=(client, model, prompts, deadline, load, seed,
                                                               args.max_tokens)) for seed in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        duration = time.monotonic() - started
        stop.set()
        load_after = os.getloadavg()
        distinct = sorted({r.prompt for r in load.results})
        if args.alone_limit and len(distinct) > args.alone_limit:
            distinct = sorted(random.Random(0).sample(distinct, args.alone_limit))
        alone_started = time.monotonic()
        alone = {i: run_one(client, request(client, model, prompts[i], "plain", args.max_tokens), i, "plain")
                 for i in distinct}
        alone_s = time.monotonic() - alone_started
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
    report = summarise(load, alone, duration, args)
    device = args.device.split(":")[0] if args.url is None else "remote"
    running = [h.get("running", 0) for h in health]
    report.update(device=device_name(args.device) if args.url is None else f"remote: {url}", dtype=dtype,
                  engine_options={k: v for k, v in os.environ.items() if k.startswith("LLMA_") and k != "LLMA_API_KEY"},
                  server_args=args.server_args, server_start_s=round(server_s, 1), alone_s=round(alone_s, 1),
                  running_during_load={"max": max(running, default=None), "mean": round(statistics.mean(running), 2)
                                       if running else None, "samples": len(running)},
                  queue_max=max((h.get("queue", 0) for h in health), default=None),
                  load_average_before_after=[[round(x, 2) for x in load_before], [round(x, 2) for x in load_after]],
                  command="python -m benchmarks.serve_load " + " ".join(argv if argv is not None else sys.argv[1:]),
                  commit=code_commit)
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"serve_load_{device}.json"
    write_report(out, report, markdown(report))
    print(json.dumps({k: report[k] for k in ("requests", "failures", "latency_s", "tokens_per_s",
                                             "identical_to_alone", "running_during_load")}))
    return 0 if report["failures"] == 0 and report["identical_checked"] == report["identical_of"] else 1


if __name__ == "__main__":
    sys.exit(main())
