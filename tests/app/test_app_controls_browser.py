"""Issue #24's chat controls and statistics in a real browser (Debian's chromium, headless) against
the real UI with a model-free pipeline (app_fakes.FakePipeline): Enter / Shift+Enter, the spinner,
Stop, Clear (button and the chatbot's trash icon) also mid-answer, questions queued with a notice,
copy and retry, Markdown rendered safely, and statistics that agree with the highlights."""
from __future__ import annotations

import re
import time

import pytest

from test_app_browser import ARGS, CHROMIUM, open_accordion
from test_app_handlers import Harness

pytestmark = pytest.mark.slow
from playwright import sync_api  # noqa: E402  (test_app_browser skips the module without chromium)

BOT = "#llma-chat [data-testid='bot']"
USER = "#llma-chat [data-testid='user']"


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    h = Harness(tmp_path_factory.mktemp("controls"))
    yield h
    h.close()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, harness):
    """A fresh session (its own chat) on the app; the fake answers at a settled pace."""
    harness.pipe.delay, harness.pipe.first_delay, harness.pipe.script = 0.01, 0.0, None
    url = f"http://127.0.0.1:{harness.port}"
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=url)
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.goto(url + "/")
    page.wait_for_selector("#llma-status :text('Ready.')")
    yield page
    context.close()


def set_number(page, label: str, value: str) -> None:
    """Type `value` into the number box of slider `label` and leave it. On a loaded 2-core machine a
    keystroke that lands while the slider re-renders can be lost (the box shows its old value), so
    this checks and types again instead of typing once and hoping."""
    box = page.locator(f"input[type=number][aria-label='number input for {label}']")
    for _ in range(3):
        box.fill(value)
        box.press("Enter")
        box.blur()
        try:
            sync_api.expect(box).to_have_value(value, timeout=3_000)
            return
        except AssertionError:
            continue
    sync_api.expect(box).to_have_value(value)


def send(page, question: str) -> None:
    page.fill("#llma-input textarea", question)
    page.click("#llma-send")


def wait_until(condition, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def wait_answers(page, n: int) -> None:
    """Until n answers are complete (their statistics footer is shown)."""
    page.wait_for_function(f"(n) => document.querySelectorAll(\"{BOT} .llma-msg-stats\").length >= n",
                           arg=n)


def test_enter_sends_and_shift_enter_adds_a_line(page, harness):
    page.click("#llma-input textarea")
    page.keyboard.type("line one")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("line two")
    assert page.input_value("#llma-input textarea") == "line one\nline two"
    page.keyboard.press("Enter")
    wait_answers(page, 1)
    assert harness.pipe.calls[-1][0] == "line one\nline two"
    assert page.locator(USER).last.inner_text() == "line one\nline two"
    assert page.input_value("#llma-input textarea") == ""


def test_a_spinner_shows_until_the_first_token(page, harness):
    harness.pipe.first_delay = 1.5
    send(page, "Spin?")
    spinner = page.locator(f"{BOT} .llma-spinner")
    spinner.wait_for(state="visible")
    sync_api.expect(page.locator("#llma-stop")).to_be_enabled()
    wait_answers(page, 1)
    assert spinner.count() == 0
    sync_api.expect(page.locator("#llma-stop")).to_be_disabled()


def test_stop_ends_the_answer_and_keeps_what_was_shown(page, harness):
    harness.pipe.delay = 0.5
    closed = harness.pipe.closed
    send(page, "Stop me?")
    page.locator(f"{BOT} mark.llma-src-passage").first.wait_for()  # some text is shown
    page.click("#llma-stop")
    page.locator(f"{BOT} .llma-msg-note").wait_for()
    bot = page.locator(BOT).last
    assert "Stopped" in bot.inner_text()
    shown = bot.locator(".llma-answer").inner_text()
    assert shown.startswith("Yes. Dictionaries") and "Dictionaries preserve insertion order, " \
        "Dictionaries preserve" not in shown
    assert harness.pipe.closed == closed + 1 and harness.pipe.active == 0  # the generation ended
    assert "Stopped before the end" in page.locator("#llma-stats").inner_text()
    harness.pipe.delay = 0.01
    send(page, "And then?")
    wait_answers(page, 1)
    question, history, _ = harness.pipe.calls[-1]
    assert question == "And then?" and history[0]["content"] == "Stop me?"
    assert history[1]["content"].strip() == shown.strip()  # the turn as it was shown


def test_clear_while_an_answer_streams_drops_it_and_the_next_question_starts_afresh(page, harness):
    send(page, "Remember me?")
    wait_answers(page, 1)
    harness.pipe.delay = 0.4
    send(page, "Second, streaming?")
    page.wait_for_function(f"() => document.querySelectorAll(\"{BOT}\").length == 2 && "
                           f"document.querySelectorAll(\"{BOT} mark\").length > 2")
    page.click("#llma-clear")
    page.wait_for_function(f"() => !document.querySelector(\"{BOT}\")")
    sync_api.expect(page.locator("#llma-stop")).to_be_disabled()
    page.wait_for_timeout(1500)  # the stopped stream has nothing more to show
    assert page.locator(BOT).count() == 0 and page.locator(USER).count() == 0
    assert harness.pipe.active == 0
    harness.pipe.delay = 0.01
    send(page, "Fresh start?")
    wait_answers(page, 1)
    assert harness.pipe.calls[-1][:2] == ("Fresh start?", [])
    assert page.locator(USER).count() == 1


def test_the_chatbots_trash_icon_also_clears_what_the_model_sees(page, harness):
    send(page, "Old turn?")
    wait_answers(page, 1)
    page.click("#llma-chat button[aria-label='Clear']")
    page.wait_for_function(f"() => !document.querySelector(\"{BOT}\")")
    send(page, "New turn?")
    wait_answers(page, 1)
    assert harness.pipe.calls[-1][:2] == ("New turn?", [])
    assert page.locator(USER).count() == 1


def test_a_question_sent_while_an_answer_streams_is_queued_with_a_notice(page, harness):
    harness.pipe.delay = 0.3
    send(page, "First?")
    page.locator(f"{BOT}").first.wait_for()
    send(page, "Second, typed while the first streams?")
    notice = page.locator("#llma-notice")
    sync_api.expect(notice).to_contain_text("1 question waits")
    page.get_by_text("Queued: “Second, typed while the first streams?”").first.wait_for()  # a toast too
    assert page.input_value("#llma-input textarea") == ""  # taken, not lost
    wait_answers(page, 2)
    asked = [c[0] for c in harness.pipe.calls[-2:]]
    assert asked == ["First?", "Second, typed while the first streams?"]
    assert harness.pipe.calls[-1][1][0]["content"] == "First?"  # asked after the first turn
    assert page.locator(USER).count() == 2 and harness.pipe.max_active == 1
    sync_api.expect(notice).not_to_contain_text("waits")


def test_copy_gives_the_text_shown_and_retry_asks_again(page, harness):
    send(page, "Copy me?")
    wait_answers(page, 1)
    page.locator("#llma-chat button[aria-label='Copy message']").last.click()
    page.wait_for_timeout(500)
    copied = page.evaluate("() => navigator.clipboard.readText()")
    assert copied == "Yes. Dictionaries preserve insertion order, Dictionaries preserve"
    calls = len(harness.pipe.calls)
    page.locator("#llma-chat button[aria-label='Retry']").click()
    wait_until(lambda: len(harness.pipe.calls) == calls + 1 and harness.pipe.active == 0)
    wait_answers(page, 1)
    page.wait_for_timeout(300)
    assert harness.pipe.calls[-1][:2] == ("Copy me?", [])  # the same question, without its old turn
    assert page.locator(USER).count() == 1 and page.locator(BOT).count() == 1


def test_markdown_renders_and_markup_stays_inert(page, harness):
    harness.pipe.script = ("Steps:\n\n- open the file\n- read it\n\n```python\nwith open(p) as f:\n"
                           "    data = f.read()\n```\n<img src=x onerror=\"window.__xss=1\"> "
                           "<script>window.__xss=1</script> [link](javascript:window.__xss=1)\n")
    send(page, "Markdown <b>please</b>?")
    wait_answers(page, 1)
    bot = page.locator(BOT).last
    assert bot.locator("li").count() == 2
    assert bot.locator("pre code").inner_text().startswith("with open(p) as f:\n    data = f.read()")
    assert "<img src=x onerror=" in bot.inner_text() and "<script>" in bot.inner_text()
    assert page.evaluate("() => typeof window.__xss") == "undefined"
    assert page.locator("#llma-chat img, #llma-chat script, #llma-chat a[href^='javascript']").count() == 0
    assert page.locator(USER).last.inner_text() == "Markdown <b>please</b>?"


def test_statistics_agree_with_the_highlights_and_read_plainly(page, harness):
    send(page, "Statistics?")
    wait_answers(page, 1)
    stats = page.locator("#llma-stats")
    sync_api.expect(stats).to_contain_text("Copied tokens")
    copied = re.search(r"Copied tokens\s+(\d+) of (\d+)", stats.inner_text())
    assert copied, repr(stats.inner_text())
    kinds = stats.locator("tr.llma-kind")
    counts = {kinds.nth(i).get_attribute("data-kind"): int(kinds.nth(i).locator("mark").inner_text())
              for i in range(kinds.count())}
    assert counts == {"passage": 8, "output": 3} and sum(counts.values()) == int(copied.group(1))
    for kind in counts:  # every counted kind is highlighted in the answer, in the legend's colour
        assert page.locator(f"{BOT} mark.llma-src-{kind}").count() > 0
        assert page.locator(f"#llma-legend mark.llma-src-{kind}").count() == 1
    text = stats.inner_text()
    assert "Why it ended" in text and "the model ended its answer" in text
    assert "Drafts confirmed" in text and not re.search(r"\d[.,]\d{4,}", text)
    stats.get_by_text("What these numbers mean").click()
    assert "the share the model agreed with" in stats.inner_text()
    plot = page.locator("#llma-plot")
    plot.locator("svg").first.wait_for()
    labels = plot.locator("svg text").evaluate_all("els => els.map(e => e.textContent)")
    assert "Copied tokens per forward pass" in labels and not any("…" in t for t in labels), labels
    numbers = [t for t in labels if re.fullmatch(r"[\d.,]+", t)]
    assert "0" in numbers and all(re.fullmatch(r"\d+", t) for t in numbers), numbers
    assert plot.locator("svg g.mark-rect path").count() >= 3  # the bars, coloured by source


def test_no_absolute_paths_on_the_page(page, harness):
    body = page.locator("body").inner_text()
    assert str(harness.service.docs_dir) not in body and str(harness.service.index_dir) not in body
    assert not re.search(r"(?<![\w.])/(tmp|home|root|work)/", body), body


def test_a_question_that_cannot_be_asked_is_a_warning_and_stays_in_the_textbox(page, harness):
    calls = len(harness.pipe.calls)
    page.click("#llma-send")  # empty
    page.get_by_text("Type a question first.").first.wait_for()
    open_accordion(page, "Settings", "input[aria-label='number input for Min n-gram']")
    for label, value in (("Min n-gram", "5"), ("Max n-gram", "2")):
        set_number(page, label, value)
    send(page, "Kept after a bad setting?")
    page.get_by_text("Invalid settings").first.wait_for()
    assert page.input_value("#llma-input textarea") == "Kept after a bad setting?"
    page.wait_for_timeout(500)
    assert len(harness.pipe.calls) == calls and page.locator(USER).count() == 0
