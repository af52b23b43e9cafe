"""Statistics panel, per-message footer, step plot data and the greedy comparison."""
from types import SimpleNamespace

from ui.stats import comparison_html, stat_rows, stats_footer, stats_html, steps_frame

STATS = {"forward_passes": 10, "tokens": 30, "proposed_tokens": 40, "accepted_tokens": 20,
         "tokens_per_forward": 3.0, "acceptance_rate": 0.5, "copied_share": 2 / 3,
         "tokens_per_s": 25.04, "wall_s": 1.2, "ttft_s": 0.31, "prompt_tokens": 512}


def test_rows_cover_the_required_numbers():
    rows = dict(stat_rows(STATS))
    assert rows["Tokens"] == "30" and rows["Forward passes"] == "10"
    assert rows["Tokens per forward"] == "3.00" and rows["Copied tokens"] == "67%"
    assert rows["Tokens / s"] == "25.0" and rows["Time to first token"] == "0.31 s"


def test_missing_values_show_a_dash_and_empty_stats_a_hint():
    rows = dict(stat_rows({"tokens": 3}))
    assert rows["Tokens"] == "3" and rows["Tokens / s"] == "–"
    assert "Ask a question" in stats_html(None)
    assert "<script" not in stats_html(STATS, stop_reason="<script>")


def test_footer():
    assert stats_footer(STATS) == ("30 tokens · 10 forward passes · 3.00 tok/forward · 67% copied · "
                                   "25.0 tok/s")
    assert stats_footer({}) == ""


def test_steps_frame_has_numeric_columns_even_when_empty():
    df = steps_frame([{"proposed": 8, "accepted": 5}, {"proposed": 4, "accepted": 0},
                      {"proposed": 0, "accepted": 0}])
    assert list(df["step"]) == [1, 2, 3] and list(df["accepted"]) == [5, 0, 0]
    assert list(df["kind"]) == ["copied", "rejected draft", "no draft"]
    empty = steps_frame([])
    assert len(empty) == 0 and str(empty["accepted"].dtype) == "int64"


def test_comparison():
    llma = SimpleNamespace(text="same", stats=STATS)
    greedy = SimpleNamespace(text="<i>other</i>", stats=dict(STATS, wall_s=3.0, forward_passes=30))
    same = comparison_html(SimpleNamespace(llma=llma, greedy=greedy, speedup=2.5, identical=True))
    assert "2.50×" in same and "identical" in same
    differ = comparison_html(SimpleNamespace(llma=llma, greedy=greedy, speedup=0.9, identical=False))
    assert "DIFFER" in differ and "&lt;i&gt;other&lt;/i&gt;" in differ and "<i>" not in differ


def test_comparison_reports_the_median_and_the_spread():
    llma = SimpleNamespace(text="same", stats=STATS)
    greedy = SimpleNamespace(text="same", stats=dict(STATS, wall_s=3.0, forward_passes=30))
    repeated = SimpleNamespace(llma=llma, greedy=greedy, speedup=2.5, identical=True,
                               speedups=[2.7, 2.5, 1.9])
    assert "Speedup: 2.50× (median of 3 alternating runs, 1.90–2.70×)" in comparison_html(repeated)
    once = SimpleNamespace(llma=llma, greedy=greedy, speedup=2.5, identical=True, speedups=[2.5])
    assert "Speedup: 2.50×</b>" in comparison_html(once)


def test_stop_reasons_read_as_words():
    assert "repetition (the answer began to loop)" in stats_html(STATS, stop_reason="repetition")
    assert "token limit" in stats_html(STATS, stop_reason="max_new_tokens")
    assert "something_new" in stats_html(STATS, stop_reason="something_new")  # an unknown one as it is
