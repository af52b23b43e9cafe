"""The decoding benchmark (`python -m benchmarks.decode`): its summary (benchmarks.report.summarise),
ratios and identity against the right greedy; its runners; and `benchmarks.gpu_steps`' forced decoding."""
from pathlib import Path

import pytest
import torch

from benchmarks.data import BenchPrompt
from benchmarks.report import MethodRun, _own_greedy, markdown, summarise
from llma.loading import LoadedModel

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def tiny_llama(context: int) -> LoadedModel:
    """A random-weight two-layer Llama on the CPU in fp32 (the benchmarks' own `random_llama`)."""
    from benchmarks.gpu_steps import random_llama

    shape = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=context)
    return random_llama(shape, 97, torch.device("cpu"), torch.float32)


def _run(outputs, times, forwards):
    return MethodRun(outputs=outputs, times=times, wall_s=sum(times), forwards=forwards)


def test_own_greedy_is_the_same_backend_and_rows():
    assert _own_greedy("llma") == "greedy"
    assert _own_greedy("llma@static") == "greedy@static"
    assert _own_greedy("llma+rows8") == "greedy+rows8"
    assert _own_greedy("llma+tree6") == "greedy+tree6"
    assert _own_greedy("llma_k32") == "greedy"


def test_summary_compares_rows_with_both_greedies():
    same = [[1, 2, 3], [4, 5]]
    other = [[1, 2, 9], [4, 5]]
    runs = {
        "hf_greedy": _run(same[:1], [3.0], 0),
        "greedy": _run(same, [1.0, 1.0], 5),
        "llma": _run(same, [0.5, 0.5], 2),
        "greedy+rows8": _run(same, [2.0, 2.0], 5),
        "llma+rows8": _run(other, [0.5, 0.5], 2),
    }
    rows = {r["method"]: r for r in summarise(runs)}
    r = rows["llma+rows8"]
    assert (r["speedup_vs_greedy"], r["speedup_vs_own_greedy"]) == (2.0, 4.0)
    assert r["identical_to_greedy"] == 0.5 and r["first_divergence_vs_greedy"] == [2]
    assert r["ms_per_forward"] == 500.0 and r["tokens_per_forward"] == 2.5
    assert rows["llma"]["speedup_vs_own_greedy"] == rows["llma"]["speedup_vs_greedy"] == 2.0


def test_gpu_steps_forced_decoding_with_rows_on_cpu():
    """The 7B-shaped run's code path, on a tiny model: every method forced to the same target."""
    from benchmarks.gpu_steps import forced_decoding

    loaded = tiny_llama(context=256)
    target = [(7 * i) % 97 for i in range(30)]
    references = {"doc": target[5:25] + target[:8]}
    prompt = BenchPrompt(prompt=list(range(3, 20)), references=references, target=target)
    report = forced_decoding(loaded, [prompt], 30, "static", rows=[2], tree=[3])
    methods = report["methods"]
    assert report["backend"] == "static"  # the base engine's, not the last one's
    assert set(methods) == {"greedy", "llma", "llma_hf_defaults", "llma_k32", "greedy+rows2",
                            "llma+rows2", "greedy+tree3", "llma+tree3"}
    assert all(m["tokens"] == 30 for m in methods.values())
    assert methods["llma+tree3"]["tokens_per_forward"] > 1
    assert methods["greedy+tree3"]["speedup_vs_own_greedy"] == 1
    assert methods["llma+rows2"]["tokens_per_forward"] >= methods["llma"]["tokens_per_forward"] > 1
    assert methods["greedy+rows2"]["speedup_vs_own_greedy"] == 1.0


def test_summary_splits_off_the_first_token():
    """After the first token: tokens after it over the time after it, against greedy's the same way."""
    outputs = [[1, 2, 3, 4, 5], [6, 7, 8]]  # 6 tokens after the first ones
    runs = {
        "hf_greedy": _run(outputs[:1], [3.0], 0),
        "greedy": MethodRun(outputs=outputs, times=[1.0, 1.0], wall_s=2.0, forwards=8,
                            first_token_s=[0.4, 0.4]),
        "llma": MethodRun(outputs=outputs, times=[0.5, 0.5], wall_s=1.0, forwards=3,
                          first_token_s=[0.4, 0.4]),
    }
    rows = {r["method"]: r for r in summarise(runs)}
    assert rows["greedy"]["decode_tokens_per_s"] == 5.0 and rows["greedy"]["ms_to_first_token"] == 400.0
    assert rows["llma"]["decode_tokens_per_s"] == 30.0 and rows["llma"]["decode_speedup_vs_greedy"] == 6.0
    assert rows["llma"]["speedup_vs_greedy"] == 2.0  # end to end, the shared first token included
    assert rows["hf_greedy"]["decode_tokens_per_s"] is None
    assert rows["hf_greedy"]["decode_speedup_vs_greedy"] is None
    report = {"dataset": "rag", "mode": "forced", "n_prompts": 2, "device": "cpu", "command": "c",
              "versions": {}, "results": list(rows.values())}
    table = markdown(report)
    assert "| 400.0 | 30.0 | 6.0x |" in table and "| 5.0 | 1.0x |" in table
    hf_line = next(line for line in table.splitlines() if line.startswith("| hf_greedy "))
    assert hf_line.endswith("| - | - | - |")
    for r in report["results"]:  # a report written before these columns still renders
        for key in ("ms_to_first_token", "decode_tokens_per_s", "decode_speedup_vs_greedy"):
            del r[key]
    assert markdown(report).count("| - | - | - |") == 3


def test_engine_runner_times_the_first_token_in_forced_decoding():
    """The runner's clock marks when the prefill's token came, inside the measured time."""
    from benchmarks.decode import measure
    from benchmarks.runners import EngineRunner
    from llma.engine import Engine, LLMAConfig

    engine = Engine(tiny_llama(context=256), "static")
    target = [(7 * i) % 97 for i in range(40)]
    prompts = [BenchPrompt(prompt=list(range(3, 30)), references={"doc": target[:30]}, target=target)]
    config = LLMAConfig(max_new_tokens=64)
    runners = {"hf_greedy": lambda p: (list(p.target), 0, 0, 0),
               "greedy": EngineRunner(engine, config.greedy(), forced=True),
               "llma": EngineRunner(engine, config, forced=True)}
    runs = measure(runners, prompts, engine.loaded.device)
    for name in ("greedy", "llma"):
        (first,) = runs[name].first_token_s
        (wall,) = runs[name].times
        assert 0 < first < wall and runs[name].outputs == [target]
    assert runs["hf_greedy"].first_token_s == []
    rows = {r["method"]: r for r in summarise(runs)}
    assert rows["llma"]["decode_speedup_vs_greedy"] > 0 and rows["llma"]["tokens_per_forward"] > 1


@pytest.mark.slow
@pytest.mark.shared_data
def test_decode_names_the_same_commit_in_its_table_and_json(tmp_path, monkeypatch):
    """`python -m benchmarks.decode` end to end (bundled model, CPU, one forced prompt): the printed table and
    the markdown name the commit the JSON records (the markdown was once rendered before it was set)."""
    import json

    from benchmarks.decode import main

    monkeypatch.setenv("LLMA_GIT_COMMIT", "abc1234")
    out = tmp_path / "bench.json"
    data = SHARED_DATA / "llma-rag" / "rag.jsonl"
    assert main(["--data", str(data), "--mode", "forced", "--limit", "1", "--max-new-tokens", "6",
                 "--device", "cpu", "--hf-limit", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["commit"] == "abc1234"
    assert "Commit abc1234." in out.with_suffix(".md").read_text()
    rows = {r["method"]: r for r in report["results"]}
    assert rows["llma"]["identical_to_greedy"] == 1.0 and rows["greedy"]["tokens_per_forward"] == 1.0
