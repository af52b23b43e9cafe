"""Issue #24 in a real browser (Debian's chromium, headless) against `python app.py`: two users
(two browser contexts). One user's upload is indexed with its progress shown in the page, listed,
named in the status line and retrieved for that user only; the other user never gets it; removing
it takes it out of the list and out of retrieval. A question nothing in the documents answers
says so. Saves artifacts/app-browser-uploads*.png."""
from __future__ import annotations

import pytest

from test_app_browser import (ANSWER_TIMEOUT_MS, ARTIFACTS, ask_and_wait, open_accordion,
                              open_session, upload_file)

pytestmark = pytest.mark.slow
from playwright import sync_api  # noqa: E402  (test_app_browser skips the module without chromium)

SECRET = "quintometer"
QUESTION = "How is the zorblax widget calibrated?"
FILLER = ("Zorblax maintenance log entry {n}: the zorblax widget housing was inspected, the "
          "gaskets were cleaned and the log was signed by the duty engineer on shift {n}.\n\n")


def private_doc(tmp_path):
    """A document with a secret sentence and enough other text (about 60 chunks) that its
    embedding takes a while, so the progress shows."""
    doc = tmp_path / "zorblax-private.md"
    doc.write_text("# Zorblax calibration\n\nThe zorblax widget is calibrated every Tuesday with a "
                   f"brass {SECRET}, which keeps its flux within three percent.\n\n"
                   + "".join(FILLER.format(n=n) for n in range(160)), encoding="utf-8")
    return doc


def sources_text(session) -> str:
    return session.locator("#llma-sources").inner_text()


@pytest.fixture(scope="module")
def browser(live_app):
    from test_app_browser import ARGS, CHROMIUM

    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield browser
        browser.close()


def test_an_upload_is_private_listed_removable_and_shows_progress(browser, live_app, tmp_path):
    first_context, first = open_session(browser, live_app.url)
    second_context, second = open_session(browser, live_app.url)
    try:
        upload_file(first, private_doc(tmp_path))
        # The indexing progress is shown in the page while the chunks are embedded.
        first.wait_for_function(
            "() => document.body.innerText.includes('Indexing zorblax-private.md: embedding chunks')",
            timeout=120_000, polling=50)
        first.wait_for_function(
            "() => (document.querySelector('#llma-upload-msg textarea') || {}).value"
            "?.includes('Added: zorblax-private.md')", timeout=ANSWER_TIMEOUT_MS)
        listing = first.locator("#llma-uploads")
        sync_api.expect(listing).to_contain_text("zorblax-private.md")
        sync_api.expect(first.locator("#llma-status")).to_contain_text("Your uploads: 1 document")
        ARTIFACTS.mkdir(exist_ok=True)
        first.screenshot(path=str(ARTIFACTS / "app-browser-uploads.png"), full_page=True)

        ask_and_wait(first, QUESTION)
        assert "upload: zorblax-private.md" in sources_text(first) and SECRET in sources_text(first)

        # The other user: no upload listed, none in the status line, none retrieved.
        open_accordion(second, "Add documents", "#llma-uploads")
        assert "zorblax-private.md" not in second.locator("#llma-uploads").inner_text()
        assert "Your uploads" not in second.locator("#llma-status").inner_text()
        ask_and_wait(second, QUESTION)
        assert SECRET not in sources_text(second) and "upload:" not in sources_text(second)
        assert SECRET not in second.locator("#llma-chat").inner_text()

        # Removed: out of the list, the status line and retrieval.
        listing.get_by_text("zorblax-private.md").click()
        first.click("#llma-remove-btn")
        first.wait_for_function(
            "() => (document.querySelector('#llma-upload-msg textarea') || {}).value"
            " === 'Removed: zorblax-private.md'", timeout=60_000)
        sync_api.expect(listing).not_to_contain_text("zorblax-private.md")
        sync_api.expect(first.locator("#llma-status")).not_to_contain_text("Your uploads")
        first.get_by_text("Clear chat").click()
        first.wait_for_function("() => !document.querySelector(\"#llma-chat [data-testid='bot']\")")
        ask_and_wait(first, QUESTION)
        # No passage at all now (the notice says so; the tiny shared docs know no zorblax). The
        # session's own cached answer may still be offered: it is this user's own.
        assert "No passage of the documents scored" in sources_text(first)
    finally:
        first_context.close()
        second_context.close()


def test_nothing_relevant_found_is_said(browser, live_app):
    context, session = open_session(browser, live_app.url)
    try:
        ask_and_wait(session, "Who painted the Mona Lisa?")
        notice = session.locator("#llma-answer-notice")
        sync_api.expect(notice).to_be_visible()
        assert "No passage of the documents scored" in notice.inner_text()
        assert "answer is the model's own" in notice.inner_text()
    finally:
        context.close()
