"""The GPU benchmarks' scripts run end to end on the CPU at toy sizes: `benchmarks.serve_batch` (the
batch engine's serving benchmark, here with a random-weight Llama and a saved tokenizer, as the GPU
machine's first call runs it) and `benchmarks.gpu_families --tiny` (Qwen3 / Gemma 3 shapes)."""
import json

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.shared_data("llma-rag/rag.jsonl")]


TOY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,  # a Llama shape
           num_key_value_heads=2, max_position_embeddings=4096)                                # at toy size


@pytest.fixture(scope="module")
def tokenizer_dir(smollm, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tokenizer")
    smollm.tokenizer.save_pretrained(folder)
    return folder


def test_serve_batch_random_model_from_a_saved_tokenizer(shared_data, tokenizer_dir, tmp_path, monkeypatch):
    import benchmarks.gpu_steps as gpu_steps
    from benchmarks import serve_batch

    monkeypatch.setitem(gpu_steps.RANDOM_SHAPES, "7b", TOY)
    out = tmp_path / "serve.json"
    assert serve_batch.main([
        "--data", str(shared_data / "llma-rag" / "rag.jsonl"), "--mode", "forced", "--random", "7b",
        "--tokenizer", str(tokenizer_dir), "--limit", "2", "--concurrency", "1,2", "--slots", "2",
        "--max-new-tokens", "8", "--dtype", "float32", "--overlap", "--warm-pass", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    rows = {(r["method"], r["concurrency"]): r for r in report["results"]}
    assert set(rows) == {("greedy", 1), ("greedy", 2), ("llma", 1), ("llma", 2), ("greedy_overlap", 2),
                         ("llma_overlap", 2)}  # two groups in turn: compared with the one-group solo runs
    for row in rows.values():
        assert row["identical_to_solo"] == 1.0 and row["first_divergences"] == []
        assert row["tokens"] == 16 and row["tokens_per_s"] > 0  # forced: 8 tokens per request
    assert rows[("greedy", 2)]["tokens_per_forward"] == 1.0
    assert rows[("llma", 1)]["tokens_per_forward"] >= 1.0
    assert report["mode"] == "forced" and report["model"].startswith("random-llama")
    assert "| llma | 2 |" in out.with_suffix(".md").read_text()


def test_gpu_batch_steps_on_a_random_model_needs_no_model_file(tmp_path, monkeypatch):
    import benchmarks.gpu_steps as gpu_steps
    from benchmarks import gpu_batch_steps

    monkeypatch.setitem(gpu_steps.RANDOM_SHAPES, "135m", TOY)
    out = tmp_path / "steps.json"
    assert gpu_batch_steps.main(["--random", "135m", "--device", "cpu", "--dtype", "float32", "--blocks", "1,2",
                                 "--rows", "1,8", "--repeat", "1", "--position", "100", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["model"].startswith("random-llama-64x128")
    assert [(r["blocks"], r["rows"]) for r in report["results"]] == [(1, 1), (1, 8), (2, 1), (2, 8)]
    assert all(r["graph_ms"] > 0 for r in report["results"])


def test_gpu_families_tiny_from_a_saved_tokenizer(shared_data, tokenizer_dir, tmp_path):
    from benchmarks import gpu_families

    assert gpu_families.main([
        "--data", str(shared_data / "llma-rag" / "rag.jsonl"), "--out", str(tmp_path), "--tiny",
        "--family", "qwen3_8b", "--prompts", "2", "--hf-prompts", "1", "--identity-prompts", "2",
        "--device", "cpu", "--dtype", "float32", "--tokenizer", str(tokenizer_dir)]) == 0
    report = json.loads((tmp_path / "gpu_qwen3_8b.json").read_text())
    assert report["model"] == "random-qwen3_8b-tiny"
    assert report["identity"]["identity_rate"] == 1.0 and report["identity"]["prompts"] == 2
    assert report["forced_decoding"] and report["static_vs_hf"] > 0


def test_the_random_135m_shape_is_the_bundled_models(smollm):
    """forced135's costs stand for the model's: its random model has every dimension of SmolLM2-135M's."""
    from benchmarks.gpu_steps import RANDOM_SHAPES

    config = smollm.model.config
    assert {k: getattr(config, k) for k in RANDOM_SHAPES["135m"]} == RANDOM_SHAPES["135m"]
