"""Statistics panel, per-message footer, step plot data and the greedy comparison."""
from types import SimpleNamespace

from ui.stats import (comparison_html, copied_by_kind, plot_colors, plot_limits, stat_rows,
                      stats_footer, stats_html, steps_frame, stop_text)

STATS = {"forward_passes": 10, "tokens": 30, "proposed_tokens": 40, "accepted_tokens": 20,
         "tokens_per_forward": 3.0, "acceptance_rate": 0.5, "copied_share": 2 / 3,
         "tokens_per_s": 25.04, "wall_s": 1.2, "ttft_s": 0.31, "prompt_tokens": 512}
STEPS = [{"accepted": 0, "source": None}, {"accepted": 8, "source": "passage"},
         {"accepted": 5, "source": "output"}, {"accepted": 4, "source": "passage"},
         {"accepted": 3, "source": "history"}]


def test_rows_cover_the_required_numbers():
    rows = dict(stat_rows(STATS))
    assert rows["Tokens generated"] == "30" and rows["Forward passes"] == "10"
    assert rows["Tokens per forward"] == "3.00" and rows["Copied tokens"] == "20 of 30 (67%)"
    assert rows["Drafts confirmed"] == "20 of 40 (50%)"
    assert rows["Tokens / s"] == "25.0" and rows["Time to first token"] == "0.31 s"


def test_the_prompt_row_shows_the_tokens_restored_from_an_earlier_prompt():
    assert dict(stat_rows(STATS))["Prompt tokens"] == "512"
    assert dict(stat_rows({**STATS, "reused_prompt_tokens": 0}))["Prompt tokens"] == "512"
    assert dict(stat_rows({**STATS, "reused_prompt_tokens": 256}))["Prompt tokens"] == "512 (256 reused)"


def test_labels_are_explained_in_plain_words_and_numbers_have_no_long_decimals():
    """Issue #24: what "acceptance" and "stopped by" mean; no "0,000000"-style numbers."""
    out = stats_html(STATS, "max_new_tokens", STEPS)
    assert "Why it ended</td><td class='llma-v'>it reached the limit on new tokens" in out
    assert "What these numbers mean" in out and "the share the model agreed with" in out
    assert stop_text("eos") == "the model ended its answer" and stop_text("stopped") == "you pressed Stop"
    assert stop_text("weird") == "weird"
    import re
    assert not re.search(r"\d[.,]\d{4,}", out), out


def test_missing_values_show_a_dash_and_empty_stats_a_hint():
    rows = dict(stat_rows({"tokens": 3}))
    assert rows["Tokens generated"] == "3" and rows["Tokens / s"] == "–"
    assert "Ask a question" in stats_html(None)
    assert "<script" not in stats_html(STATS, stop_reason="<script>")


def test_copied_tokens_split_by_source_add_up_to_the_copied_count():
    """The per-kind rows (in the highlight colours) add up to "Copied tokens", copies from the
    answer itself included; a step that does not say counts as another reference."""
    counts = copied_by_kind(STEPS)
    assert counts == {"passage": 12, "output": 5, "history": 3}
    assert sum(counts.values()) == STATS["accepted_tokens"]
    out = stats_html(STATS, None, STEPS)
    assert "<td class='llma-sub'>from repeated from this answer</td><td class='llma-v'><mark " \
           "class='llma-src llma-src-output'>5</mark>" in out
    assert "llma-src-passage'>12<" in out and "llma-src-history'>3<" in out
    assert copied_by_kind([{"accepted": 2}]) == {"other": 2}
    blank = stats_html(STATS, None, [{"accepted": 2, "source": "blank"}])
    assert "spaces and line breaks (not highlighted)</td><td class='llma-v'>2</td>" in blank


def test_footer():
    assert stats_footer(STATS) == ("30 tokens · 10 forward passes · 3.00 tok/forward · 67% copied · "
                                   "25.0 tok/s")
    assert stats_footer({}) == ""


def test_steps_frame_and_plot_limits_give_whole_number_axes_from_zero():
    df = steps_frame([{"proposed": 8, "accepted": 5, "source": "passage"}, {"proposed": 4, "accepted": 0},
                      {"proposed": 0, "accepted": 0}, {"proposed": 3, "accepted": 2}])
    assert list(df["step"]) == [1, 4] and list(df["accepted"]) == [5, 2]  # the passes that copied
    assert list(df["source"]) == ["passage", "other"]
    assert plot_limits(df, 4) == ([0, 10], [0, 5])
    long = steps_frame([{"accepted": 17, "source": "output"}] * 40)
    assert plot_limits(long, 40) == ([0, 41], [0, 17]) and plot_limits(long, 60)[0] == [0, 61]
    assert set(plot_colors()) >= set(long["source"]) | set(df["source"])
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
    assert "it started repeating itself in a loop" in stats_html(STATS, stop_reason="repetition")
    assert "reached the limit on new tokens" in stats_html(STATS, stop_reason="max_new_tokens")
    assert "something_new" in stats_html(STATS, stop_reason="something_new")  # an unknown one as it is
