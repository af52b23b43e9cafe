"""A real browser (Debian's chromium, headless, driven by Playwright) against `python app.py`:
example question -> streamed, highlighted answer with statistics; an uploaded document full of
markup is indexed and shown as text, never executed. Saves artifacts/app-browser*.png."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("LLMA_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
EXAMPLE = "Are leading zeros allowed in a decimal integer literal?"
XSS_DOC = """# Zorblax widgets

The zorblax widget is configured with the markup <script>window.__xss=1</script> and
<img src=x onerror="window.__xss=1"> inside its zorblax settings file.
"""
ANSWER_TIMEOUT_MS = 240_000
pytestmark = pytest.mark.slow  # a browser and the session's live app (about 35 s to start)

if not Path(CHROMIUM).is_file():
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium); the browser test needs it",
                allow_module_level=True)
from playwright import sync_api  # noqa: E402  (a test dependency: playwright==1.65.2)


@pytest.fixture(scope="module")
def page(live_app):
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.goto(live_app.url)
        page.wait_for_selector("#llma-status :text('Ready.')", timeout=60_000)
        yield page
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "app-browser-final.png"), full_page=True)
        browser.close()


def assistant_count(page) -> int:
    return page.locator("#llma-chat [data-testid='bot']").count()


def ask_and_wait(page, question: str | None = None) -> None:
    """Submit (typing `question` if given) and wait until the answer's statistics arrive."""
    before = assistant_count(page)
    if question is not None:
        page.fill("#llma-input textarea", question)
    page.evaluate("() => { const s = document.querySelector('#llma-stats'); "
                  "if (s) s.dataset.old = s.innerText; }")
    page.click("#llma-send")
    page.wait_for_function(
        "(n) => document.querySelectorAll(\"#llma-chat [data-testid='bot']\").length > n",
        arg=before, timeout=ANSWER_TIMEOUT_MS)
    page.wait_for_function(
        "() => { const s = document.querySelector('#llma-stats'); "
        "return s && s.innerText !== s.dataset.old && s.innerText.includes('Forward passes'); }",
        timeout=ANSWER_TIMEOUT_MS)


def open_accordion(page, label: str, inside: str) -> None:
    """Open the accordion `label` until the element `inside` it is visible. A click that lands
    while the page is still settling can be lost (or close it again), so this checks and
    retries instead of clicking once and hoping."""
    target = page.locator(inside).first
    for _ in range(4):
        if target.is_visible():
            return
        page.get_by_text(label, exact=True).first.click()
        try:
            target.wait_for(state="visible", timeout=10_000)
            return
        except sync_api.TimeoutError:
            continue
    sync_api.expect(target).to_be_visible()


def upload_file(page, path: Path) -> None:
    """Put `path` in the upload box, wait until the server has it (the box shows its download
    link), and add it to the index."""
    open_accordion(page, "Add documents", "#llma-upload")
    page.locator("#llma-upload input[type=file]").set_input_files(str(path))
    box = page.locator("#llma-upload")
    # Loose: under a full test run on 2 cores the upload itself can take longer than the default 30 s.
    # Gradio shows the name as two spans (stem, extension) with a space between them; the row's
    # cell carries the whole name as its accessible name.
    sync_api.expect(box.get_by_role("cell", name=path.name)).to_be_visible(timeout=ANSWER_TIMEOUT_MS)
    sync_api.expect(box).to_contain_text("⇣", timeout=ANSWER_TIMEOUT_MS)  # on the server
    page.click("#llma-upload-btn")


def test_empty_message_shows_a_warning(page):
    page.fill("#llma-input textarea", "")
    page.click("#llma-send")
    page.get_by_text("Type a question first.").first.wait_for(state="visible")


def test_example_question_streams_a_highlighted_answer(page):
    page.get_by_text(EXAMPLE).first.click()
    # Gradio fills the textbox from the example through its own event round trip: wait for it
    # (asserting at once failed on a loaded CI machine).
    sync_api.expect(page.locator("#llma-input textarea")).to_have_value(EXAMPLE, timeout=30_000)
    ask_and_wait(page)
    bot = page.locator("#llma-chat [data-testid='bot']").last
    assert bot.inner_text().strip()
    # The answer copies from the passages (or, asked again, from the earlier turn / cache).
    if page.locator("#llma-chat mark.llma-src").count() == 0:
        ask_and_wait(page, EXAMPLE)
    marks = page.locator("#llma-chat mark.llma-src")
    assert marks.count() > 0
    assert marks.first.is_visible()
    assert marks.first.get_attribute("title").startswith("copied from ")
    stats = page.locator("#llma-stats").inner_text()
    for label in ("Tokens", "Forward passes", "Tokens per forward", "Copied tokens", "Tokens / s",
                  "Time to first token"):
        assert label in stats
    assert page.locator("#llma-plot").is_visible()
    assert "integers.md" in page.locator("#llma-sources").inner_text()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "app-browser-answer.png"), full_page=True)


def test_uploaded_markup_is_shown_as_text_not_executed(page, tmp_path):
    doc = tmp_path / "zorblax.md"
    doc.write_text(XSS_DOC, encoding="utf-8")
    upload_file(page, doc)
    page.wait_for_function(
        "() => (document.querySelector('#llma-upload-msg textarea') || {}).value"
        "?.includes('Index updated')", timeout=ANSWER_TIMEOUT_MS)
    assert "Added: zorblax.md" in page.input_value("#llma-upload-msg textarea")

    ask_and_wait(page, "What markup is the zorblax widget configured with?")
    sources = page.locator("#llma-sources")
    text = sources.inner_text()
    assert "<script>window.__xss=1</script>" in text
    assert '<img src=x onerror="window.__xss=1">' in text
    assert page.evaluate("() => typeof window.__xss") == "undefined"
    assert page.locator("#llma-sources script, #llma-sources img, #llma-chat img[src='x']").count() == 0
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "app-browser-xss.png"), full_page=True)


PRIVATE_QUESTION = "What happens when an assert statement fails?"


def open_session(browser, url: str):
    """A new browser context (its own cookies and storage: another user) on the app."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    session = context.new_page()
    session.set_default_timeout(30_000)
    session.goto(url)
    session.wait_for_selector("#llma-status :text('Ready.')", timeout=60_000)
    return context, session


def test_a_second_session_never_sees_the_first_sessions_answers(page, live_app):
    """Issue #24: two users (two browser contexts). The first one's cached answer is a source in
    its own session only; the second, asking the same question, gets no cached answer and no
    earlier turn of the first."""
    first_context, first = open_session(page.context.browser, live_app.url)
    second_context, second = open_session(page.context.browser, live_app.url)
    try:
        ask_and_wait(first, PRIVATE_QUESTION)
        first_answer = first.locator("#llma-chat [data-testid='bot'] .llma-answer").last.inner_text()
        first.get_by_text("Clear chat").click()  # no earlier turn: the answer cache is the only copy
        first.wait_for_function("() => !document.querySelector(\"#llma-chat [data-testid='bot']\")")
        ask_and_wait(first, PRIVATE_QUESTION)
        assert f'cached answer to "{PRIVATE_QUESTION}"' in first.locator("#llma-sources").inner_text()

        ask_and_wait(second, PRIVATE_QUESTION)
        sources = second.locator("#llma-sources").inner_text()
        assert "cached answer" not in sources and "earlier turn" not in sources, sources
        assert second.locator("#llma-chat [data-testid='bot']").count() == 1
        assert second.locator("#llma-chat [data-testid='user']").count() == 1
        assert second.locator("#llma-chat mark.llma-src-cache, #llma-chat mark.llma-src-history").count() == 0
        # The same question, answered from the passages alone: the same greedy answer.
        answer = second.locator("#llma-chat [data-testid='bot'] .llma-answer").last.inner_text()
        assert answer == first_answer
        ARTIFACTS.mkdir(exist_ok=True)
        second.screenshot(path=str(ARTIFACTS / "app-browser-second-session.png"), full_page=True)
    finally:
        first_context.close()
        second_context.close()
