"""Where one static decoding step's time goes on the GPU: kernel profile and variants (issue #3).

    python -m benchmarks.gpu_profile --json $OUT/gpu_profile.json

A SmolLM2-135M-shaped Llama with random weights in bf16 (no model file needed). Writes the JSON after
every section, so a run cut short keeps what it measured.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from benchmarks.gpu_steps import block_runner, random_llama, timed
from llma.static import StaticBackend

SMOL = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
            num_key_value_heads=3, max_position_embeddings=8192, tie_word_embeddings=True)
DEV = torch.device("cuda")


def kernel_times(run, steps: int = 5) -> list[tuple[str, int, float]]:
    """(kernel, launches per call, GPU us per call) of `run()`, the costliest first."""
    run()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            run()
        torch.cuda.synchronize()
    rows = [(e.key, e.count // steps, e.self_device_time_total / steps) for e in prof.key_averages()
            if e.self_device_time_total > 0]
    return sorted(rows, key=lambda r: -r[2])


def kernel_profile(backend: StaticBackend, block: int, length: int, steps: int = 5) -> dict:
    rows = kernel_times(block_runner(backend, block, length), steps)
    return {"kernels_per_step": sum(r[1] for r in rows), "gpu_us_per_step": round(sum(r[2] for r in rows), 1),
            "top": [(k[:90], n, round(us, 1)) for k, n, us in rows[:25]]}


def decode_overhead(backend: StaticBackend, prompt_len: int = 900, steps: int = 60) -> dict:
    """Wall ms of forward([t]) + argmax + trim (what the decoder does per greedy step) vs the replay."""
    backend.reserve(128)
    backend.prefill(torch.randint(0, 49152, (prompt_len,)).tolist())
    for _ in range(5):
        backend.forward([7]).argmax(-1).tolist()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(steps):
        backend.forward([int(i)]).argmax(-1).tolist()
    per_step = (time.perf_counter() - t0) * 1e3 / steps
    replay = timed(block_runner(backend, backend.block, backend.key_length), DEV, reps=30)
    return {"attention_length": backend.key_length, "step_ms": round(per_step, 4), "replay_ms": replay}


def bitwise_probe(backend: StaticBackend) -> bool:
    backend.reserve(64)
    prompt = torch.randint(0, 49152, (500,)).tolist()
    more = torch.randint(0, 49152, (40,)).tolist()
    backend.prefill(prompt)
    one = torch.cat([backend.forward([t]) for t in more])
    backend.trim(500)
    return torch.equal(one, backend.forward(more))


def attention_only(length: int, b: int = 32, kv: int = 3, g: int = 3, d: int = 64) -> dict:
    """One layer's attention at decode shapes, by kernel: events over 200 back-to-back calls."""
    q = torch.randn(kv, g * b, d, device=DEV, dtype=torch.bfloat16)
    k = torch.randn(kv, length, d, device=DEV, dtype=torch.bfloat16)
    v = torch.randn(kv, length, d, device=DEV, dtype=torch.bfloat16)
    mask = torch.zeros(1, 1, g * b, length, device=DEV, dtype=torch.bfloat16)
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def sdpa(kind):
        def run():
            with sdpa_kernel([kind]):
                return F.scaled_dot_product_attention(q[None], k[None], v[None], attn_mask=mask)
        return run

    cands = {"sdpa_efficient": sdpa(SDPBackend.EFFICIENT_ATTENTION),
             "sdpa_cudnn": sdpa(SDPBackend.CUDNN_ATTENTION), "sdpa_math": sdpa(SDPBackend.MATH),
             "bmm": lambda: torch.bmm(torch.softmax(torch.baddbmm(mask[0], q, k.transpose(1, 2)), -1), v)}
    try:  # flash attention with a per-call key count on the device (bottom-right causal): no mask tensor
        qf = torch.randn(b, kv * g, d, device=DEV, dtype=torch.bfloat16)
        kf = torch.randn(length, kv, d, device=DEV, dtype=torch.bfloat16)
        vf = torch.randn(length, kv, d, device=DEV, dtype=torch.bfloat16)
        cu_q = torch.tensor([0, b], device=DEV, dtype=torch.int32)
        cu_k = torch.tensor([0, length], device=DEV, dtype=torch.int32)
        used = torch.tensor([length // 2], device=DEV, dtype=torch.int32)
        cands["flash_varlen_seqused"] = lambda: torch.ops.aten._flash_attention_forward(
            qf, kf, vf, cu_q, cu_k, b, length, 0.0, True, False, seqused_k=used)
    except Exception as err:  # noqa: BLE001
        print("flash varlen unavailable:", err)
    out = {}
    for name, fn in cands.items():
        try:
            for _ in range(5):
                fn()
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(200):
                fn()
            end.record()
            end.synchronize()
            out[name] = round(start.elapsed_time(end) * 1e3 / 200, 2)  # microseconds
        except Exception as err:  # noqa: BLE001
            out[name] = f"failed: {type(err).__name__}: {str(err)[:120]}"
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", type=Path, required=True)
    args = ap.parse_args()
    report: dict = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}

    def save(section: str, value) -> None:
        report[section] = value
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(section, json.dumps(value, indent=1), flush=True)

    model = random_llama(SMOL, 49152, DEV, torch.bfloat16).model
    save("attention_us", {L: attention_only(L) for L in (1024, 2048)})
    for attention in ("sdpa", "bmm"):
        eager = StaticBackend(model, graphs=False, max_len=4096, attention=attention)
        save(f"profile_{attention}", kernel_profile(eager, 32, 1024))
        graphs = StaticBackend(model, graphs=True, max_len=4096, attention=attention)
        save(f"replay_ms_{attention}", {f"B{b}_L{L}": timed(block_runner(graphs, b, L), DEV, reps=50)
                                        for b in (1, 8, 32) for L in (1024, 2048)})
        save(f"decode_{attention}", decode_overhead(graphs))
        save(f"bitwise_{attention}", bitwise_probe(graphs))
        del eager, graphs
    for attention in ("sdpa", "bmm"):
        t0 = time.perf_counter()
        backend = StaticBackend(model, graphs=True, max_len=4096, attention=attention, compile=True)
        run = block_runner(backend, 32, 1024)
        compile_s = time.perf_counter() - t0
        save(f"compile_{attention}", {"compile_s": round(compile_s, 1),
                                      "replay_ms_B32_L1024": timed(run, DEV, reps=50),
                                      # L = 1024: no recompile
                                      "decode": decode_overhead(backend, prompt_len=800),
                                      "bitwise": bitwise_probe(backend)})
        save(f"profile_compiled_graph_{attention}", kernel_profile(backend, 32, 1024))
        del backend


if __name__ == "__main__":
    main()
