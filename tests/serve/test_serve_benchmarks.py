"""The server's benchmarks against the live test server (tiny model, CPU), through the openai client:
`benchmarks.predicted_outputs` (editing with the text as the prediction) and `benchmarks.serve_load`."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("openai")

from serve_fixtures import API_KEY  # noqa: E402

from benchmarks import predicted_outputs, serve_load  # noqa: E402

ARTICLE = ("The volcano erupted on Monday, sending ash high into the sky. Villagers left their homes. "
           "Scientists said the eruption could last for weeks, and flights were cancelled.")


def test_predicted_outputs_runs_both_ways_and_reports_identity(server, tmp_path):
    data = tmp_path / "cnndm.jsonl"
    rows = [{"query": f"### Instruction:\nsummarize\n\n### Input:\n{ARTICLE} Day {i}.\n\n### Response:\n",
             "docs": [], "result": {}} for i in range(2)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    first = "The volcano erupted on Monday, sending ash high into the sky."
    assert predicted_outputs.load_articles(data, 5, 80) == [first, first]  # cut at a sentence end
    assert predicted_outputs.load_articles(data, 1, 1000) == [ARTICLE + " Day 0."]
    out = tmp_path / "po.json"
    for sampling in ([], ["--temperature", "1.0", "--seed", "3"]):
        code = predicted_outputs.main(["--url", server.url, "--api-key", API_KEY, "--data", str(data),
                                       "--articles", "2", "--max-tokens", "16", "--out", str(out), *sampling])
        report = json.loads(out.read_text())
        assert code == 0 and report["summary"]["identical"] == "2/2" and len(report["requests"]) == 2
        assert report["summary"]["speedup"] > 0 and report["commit"] is not None
        assert "Speedup" in out.with_suffix(".md").read_text()


def test_serve_load_checks_every_request_against_its_run_alone(server, tmp_path):
    data = tmp_path / "rag.jsonl"
    data.write_text("".join(json.dumps({"query": f"What erupted on day {i}?", "docs": [ARTICLE, "Lava is hot."]})
                            + "\n" for i in range(3)))
    out = tmp_path / "load.json"
    code = serve_load.main(["--url", server.url, "--api-key", API_KEY, "--data", str(data), "--clients", "3",
                            "--minutes", "0.1", "--prompts", "3", "--max-tokens", "8", "--warm-up", "1",
                            "--alone-limit", "2", "--out", str(out)])
    report = json.loads(out.read_text())
    assert code == 0 and report["failures"] == 0 and report["requests"] >= 3
    assert report["distinct_rerun_alone"] <= 2 and report["identical_checked"] == report["identical_of"] > 0
    assert report["running_during_load"]["samples"] >= 1
