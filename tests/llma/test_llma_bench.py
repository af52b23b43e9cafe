"""The benchmark's summary (llma.bench_report.summarise): ratios and identity against the right greedy."""
from llma.bench_report import MethodRun, _own_greedy, summarise


def _run(outputs, times, forwards):
    return MethodRun(outputs=outputs, times=times, wall_s=sum(times), forwards=forwards)


def test_own_greedy_is_the_same_backend_and_rows():
    assert _own_greedy("llma") == "greedy"
    assert _own_greedy("llma@static") == "greedy@static"
    assert _own_greedy("llma+rows8") == "greedy+rows8"
    assert _own_greedy("llma+tree6") == "greedy+tree6"
    assert _own_greedy("llma_k32") == "greedy"


def test_summary_compares_rows_with_both_greedies():
    same, other = [[1, 2, 3], [4, 5]], [[1, 2, 9], [4, 5]]
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


def test_gpu_bench_forced_decoding_with_rows_on_cpu():
    """The 7B-shaped run's code path, on a tiny model: every method forced to the same target."""
    from llma.bench_data import BenchPrompt
    from llma.gpu_bench import forced_decoding
    from llma_fixtures import tiny_llama

    loaded = tiny_llama(context=256)
    target = [(7 * i) % 97 for i in range(30)]
    prompt = BenchPrompt(prompt=list(range(3, 20)), references={"doc": target[5:25] + target[:8]}, target=target)
    report = forced_decoding(loaded, [prompt], 30, "static", rows=[2], tree=[3])
    methods = report["methods"]
    assert report["backend"] == "static"  # the base engine's, not the last one's
    assert set(methods) == {"greedy", "llma", "llma_hf_defaults", "llma_k32", "greedy+rows2", "llma+rows2",
                            "greedy+tree3", "llma+tree3"}
    assert all(m["tokens"] == 30 for m in methods.values())
    assert methods["llma+tree3"]["tokens_per_forward"] > 1 and methods["greedy+tree3"]["speedup_vs_own_greedy"] == 1
    assert methods["llma+rows2"]["tokens_per_forward"] >= methods["llma"]["tokens_per_forward"] > 1
    assert methods["greedy+rows2"]["speedup_vs_own_greedy"] == 1.0
