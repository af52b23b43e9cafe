"""Spans -> highlighted HTML: escaping, overlapping/adjacent spans, unicode, empty input."""
import html
import re
from html.parser import HTMLParser

import pytest

from ui.highlight import (highlight, legend_html, render_answer, render_sources, render_user)
from app_fakes import FakePassage, FakeSpan

XSS = '<script>window.__xss=1</script> and <img src=x onerror="window.__xss=1">'


def span(start, end, kind="passage", sid="passage:1", s0=0, s1=None, label="[1] Doc"):
    return FakeSpan(start, end, kind, sid, s0, s1 if s1 is not None else s0 + end - start, label)


class _Collect(HTMLParser):
    """Tags, attributes and visible text of a fragment, as a browser would parse it."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags, self.text = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def parse(fragment):
    p = _Collect()
    p.feed(fragment)
    p.close()
    return p


def visible_text(fragment):
    return "".join(parse(fragment).text)


def marks(fragment):
    """(text, class, title) of every <mark> piece."""
    return [(html.unescape(m.group(3)), m.group(1), html.unescape(m.group(2))) for m in re.finditer(
        r'<mark class="llma-src ([^"]+)" title="([^"]*)">(.*?)</mark>', fragment)]


def test_markup_in_text_is_escaped_not_rendered():
    out = render_answer(XSS, [span(0, 8)])
    tags = {t for t, _ in parse(out).tags}
    assert tags <= {"div", "mark", "p"}, tags
    assert "<script" not in out and "<img" not in out
    assert "onerror=" not in out.replace("onerror=&quot;", "")  # only as escaped text
    assert visible_text(out) == XSS


def test_passages_and_user_messages_are_escaped():
    p = FakePassage("passage:1", 1, XSS, "evil<.md", "<b>title</b>", 0.5, "c")
    out = render_sources([p], [span(0, 8, s0=0, s1=8)])
    assert not any(t in {"script", "img", "b"} for t, _ in parse(out).tags)
    assert XSS in visible_text(out) and "<b>title</b>" in visible_text(out)
    user = render_user(XSS)
    assert {t for t, _ in parse(user).tags} == {"div"}
    assert visible_text(user) == XSS


def test_title_attribute_is_escaped():
    out = render_answer("abc", [span(0, 3, label='x" onmouseover="alert(1)')])
    (tag,) = [a for t, a in parse(out).tags if t == "mark"]
    assert set(tag) == {"class", "title"}
    assert tag["title"] == 'copied from x" onmouseover="alert(1)'


def test_colors_by_source_kind_and_plain_text_between():
    text = "aaa bbb ccc ddd"
    out = render_answer(text, [span(0, 3), span(4, 7, "history", "history:0"),
                               span(8, 11, "cache", "cache:0")])
    assert visible_text(out) == text
    assert [(t, c) for t, c, _ in marks(out)] == [
        ("aaa", "llma-src-passage"), ("bbb", "llma-src-history"), ("ccc", "llma-src-cache")]


def test_overlapping_spans_cover_union_once_and_list_both_sources():
    text = "0123456789"
    out = render_answer(text, [span(2, 6, label="A"), span(4, 8, "history", "history:1", label="B")])
    assert visible_text(out) == text
    got = marks(out)
    assert [t for t, _, _ in got] == ["23", "45", "67"]
    assert got[1][2] == "copied from A; copied from B"
    assert got[2][1] == "llma-src-history"


def test_adjacent_spans_stay_separate():
    out = render_answer("abcdef", [span(0, 3, label="A"), span(3, 6, "cache", "cache:0", label="B")])
    assert [(t, title) for t, _, title in marks(out)] == [("abc", "copied from A"),
                                                           ("def", "copied from B")]


def test_unicode_offsets_are_characters():
    text = "Grüße 👋 — 東京 is 🐍"
    start = text.index("👋")
    out = render_answer(text, [span(start, start + 4)])
    assert visible_text(out) == text
    assert marks(out)[0][0] == "👋 —"  # the piece's trailing space is left unmarked


@pytest.mark.parametrize("spans", [[], [span(0, 0)], [span(5, 2)], [span(-3, 100)], [span(50, 60)]])
def test_empty_and_out_of_range_spans(spans):
    assert visible_text(render_answer("", spans)) == ""
    out = render_answer("hello", spans)
    assert visible_text(out) == "hello"
    for text, _, _ in marks(out):
        assert text == "hello"  # clipped to the text, never beyond it


def test_answer_markdown_is_rendered_on_one_line_with_its_marks():
    """Issue #24: code fences, lists and headings render; the HTML is one line (the chat passes
    it through untouched), code keeps its line breaks, and marks do not break the Markdown."""
    text = ("Use it:\n\n```python\nwith open(p) as f:\n\n    data = f.read()\n```\n"
            "- first item\n- second item\n\n1. one\n2. two\n# Title")
    first = text.index("first item")
    fence = text.index("with open")
    out = render_answer(text, [span(first - 2, first + 10), span(fence, fence + 18, "output")],
                        footer="3 tokens")
    assert "\n" not in out
    tags = [t for t, _ in parse(out).tags]
    assert tags.count("li") == 4 and "ul" in tags and "ol" in tags and "h1" in tags
    assert '<pre><code class="language-python">' in out
    assert [t for t, _, _ in marks(out)] == ["with open(p) as f:", "first item"]
    assert marks(out)[0][1] == "llma-src-output"
    assert "with open(p) as f:&#10;&#10;    data = f.read()" in out.replace("</mark>", "").split(">", 3)[-1] \
        or "&#10;&#10;    data = f.read()" in out
    assert "3 tokens" in visible_text(out)


def test_markdown_in_answers_cannot_inject_markup_links_or_images():
    text = ("[click](javascript:alert(1)) ![x](http://example.com/x.png) <b onclick=x>b</b>\n"
            "```\n<script>window.__xss=1</script>\n```\n\ue000\U000f0000 sentinel-like")
    out = render_answer(text, [span(0, 5)])
    tags = {t for t, _ in parse(out).tags}
    assert tags <= {"div", "mark", "p", "pre", "code", "br"}, tags
    assert "href" not in out and "<img" not in out and "<script" not in out and "<b " not in out
    assert "&lt;script&gt;window.__xss=1&lt;/script&gt;" in out


def test_sources_mark_only_their_own_copies():
    p1 = FakePassage("passage:1", 1, "alpha beta gamma", "a.md", "A", 0.9, "c1")
    p2 = FakePassage("passage:2", 2, "delta epsilon", "b.md", "B", 0.5, "c2")
    spans = [span(0, 4, sid="passage:2", s0=0, s1=5), span(5, 9, sid="passage:1", s0=6, s1=10),
             span(10, 13, "history", "history:0", 0, 3)]
    out = render_sources([p1, p2], spans)
    assert [t for t, _, _ in marks(out)] == ["beta", "delta"]
    assert "score 0.900" in out and "4 chars copied" in out and "5 chars copied" in out


def test_sources_show_copied_history_when_its_text_is_known():
    class Src:
        kind, text, label = "history", "an <earlier> answer", "earlier answer (message 2)"

    out = render_sources([], [span(0, 7, "history", "history:1", 4, 11)], {"history:1": Src()})
    assert marks(out)[0][0] == "earlier"
    assert "an <earlier> answer" in visible_text(out)


def test_no_passages_message_and_legend():
    assert "No passages" in render_sources([])
    legend = legend_html()
    for cls in ("llma-src-passage", "llma-src-history", "llma-src-cache"):
        assert cls in legend


def test_highlight_keeps_newlines_when_asked():
    assert highlight("a\nb", [], newlines="\n") == "a\nb"


def test_reflow_joins_hard_wrapped_prose_only():
    from ui.highlight import reflow

    text = "Prior to 3.8,\nthe order was\nundefined.\n\nExample:\n   >>> d = {}\n   >>> d\n* item\n* item"
    out = reflow(text)
    assert len(out) == len(text)  # one character for one: span offsets stay valid
    assert out.startswith("Prior to 3.8, the order was undefined.\n\nExample:\n   >>> d = {}\n   >>> d\n* item")
