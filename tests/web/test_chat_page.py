"""The chat page in Chromium, as a guest on a phone and as a signed-in roper on a desktop."""

from __future__ import annotations

import time
from typing import Any

import pytest

from server.llm.chain import FailoverChain
from server.llm.fake import FakeBackend
from tests.web.conftest import DESKTOP, PHONE, Browse, Site, serious_violations

pytestmark = pytest.mark.one_pass  # see tests/web/conftest.py
QUESTION = "How long is a heading rope?"
# Records, while the answer streams, how much draft text the page has shown.
WATCH_DRAFT = """() => {
  window.__draftSeen = 0;
  new MutationObserver(() => {
    const draft = document.querySelector('.msg.assistant.streaming .draft');
    if (draft) window.__draftSeen = Math.max(window.__draftSeen, draft.textContent.length);
  }).observe(document.getElementById('thread'),
             {subtree: true, childList: true, characterData: true});
}"""


def until(page: Any, expression: str, timeout_s: float = 10) -> None:
    """Poll an expression with evaluate: wait_for_function needs eval, which our CSP bans."""
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"never true: {expression}"
        page.wait_for_timeout(50)


def ask(page: Any, question: str = QUESTION) -> Any:
    page.get_by_label("Your question").fill(question)
    page.get_by_label("Your question").press("Enter")
    answer = page.locator(".msg.assistant").last
    answer.locator(".meta").wait_for(timeout=120_000)
    return answer


def test_a_guest_on_a_phone_sees_the_answer_stream_and_opens_a_cited_passage(
    browse: Browse,
) -> None:
    page, _ = browse.open("/", size=PHONE)
    assert serious_violations(page) == []
    browse.shot(page, "empty")
    page.evaluate(WATCH_DRAFT)
    answer = ask(page)
    assert page.evaluate("window.__draftSeen") > 0  # tokens were shown before the end
    assert "streaming" not in (answer.get_attribute("class") or "")
    assert answer.locator(".draft").count() == 0  # the checked answer replaced the draft
    assert answer.locator(".sources .source").count() >= 1
    assert "ms" in answer.locator(".meta").inner_text()
    browse.shot(page, "answered")

    chip = answer.locator(".body .cite").first
    (chip if chip.count() else answer.locator(".sources .source").first).click()
    dialog = page.locator("dialog#passage")
    dialog.wait_for(state="visible")
    title = dialog.locator("#passage-title").inner_text()
    assert title.startswith("[") and len(title) > 4
    assert len(dialog.locator("#passage-text").inner_text()) > 40
    assert "knowledge/" in dialog.locator("#passage-where").inner_text()
    assert serious_violations(page) == []
    browse.shot(page, "passage")
    page.keyboard.press("Escape")
    dialog.wait_for(state="hidden")


def test_a_dropped_connection_keeps_the_question_and_offers_retry(browse: Browse) -> None:
    page, watch = browse.open("/", size=PHONE)
    watch.allowed_errors.append("net::ERR_INTERNET_DISCONNECTED")
    page.route("**/api/chat/stream", lambda route: route.abort("internetdisconnected"))
    page.get_by_label("Your question").fill(QUESTION)
    page.get_by_role("button", name="Ask").click()
    status = page.locator("#status")
    status.get_by_role("button", name="Retry").wait_for()
    assert "question is kept" in status.inner_text()
    assert page.get_by_label("Your question").input_value() == QUESTION
    assert page.locator(".msg").count() == 0
    browse.shot(page, "lost")

    page.unroute("**/api/chat/stream")
    status.get_by_role("button", name="Retry").click()
    page.locator(".msg.assistant .meta").wait_for(timeout=120_000)
    assert page.locator(".msg.user").inner_text() == QUESTION


def test_quota_reached_shows_the_way_to_upgrade(
    browse: Browse, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(browse.site.components.settings, "guest_daily_messages", 0)
    page, watch = browse.open("/", size=PHONE)
    watch.allowed_statuses.add(402)
    page.get_by_label("Your question").fill(QUESTION)
    page.get_by_role("button", name="Ask").click()
    link = page.locator("#status").get_by_role("link", name="Upgrade or buy credits")
    link.wait_for()
    assert link.get_attribute("href") == "/billing"
    assert page.get_by_label("Your question").input_value() == QUESTION
    browse.shot(page, "quota")


def test_the_csp_blocks_an_injected_inline_script(browse: Browse) -> None:
    page, watch = browse.open("/")
    watch.allowed_errors.append("Content Security Policy")
    page.evaluate(
        """() => {
          window.__violations = [];
          document.addEventListener('securitypolicyviolation',
            (e) => window.__violations.push(e.violatedDirective));
          const s = document.createElement('script');
          s.textContent = 'window.__pwned = true';
          document.body.append(s);
        }"""
    )
    until(page, "window.__violations.length > 0")
    assert page.evaluate("window.__pwned") is None
    assert page.evaluate("window.__violations")[0].startswith("script-src")


def test_docs_lists_the_api_operations(browse: Browse) -> None:
    page, _ = browse.open("/docs", size=DESKTOP)
    page.locator(".opblock").first.wait_for(timeout=30_000)
    assert page.locator(".opblock").count() > 20
    summary = page.locator(".opblock-summary-path").all_inner_texts()
    assert "/api/chat" in summary and "/v1/chat/completions" in summary
    assert "Unable to render" not in page.content()
    browse.shot(page, "docs")


def test_a_draft_sentence_the_sources_do_not_support_is_removed_and_named(
    browse: Browse, site: Site
) -> None:
    """The reader saw the draft stream in, so the checked answer says what it took out."""
    chat = site.components.chat
    real = chat.chain
    draft = "Beginner headers commonly use 30-31 foot ropes [1]. Every header must also pay a "
    chat.chain = FailoverChain([FakeBackend([draft, "$50 rope fee [1]."])])
    try:
        page, _ = browse.open("/", size=PHONE)
        answer = ask(page, "What rope length should a beginner header use?")
        assert "30-31" in answer.locator(".body").inner_text()
        assert "$50" not in answer.locator(".body").inner_text()
        note = answer.locator("details.dropped")
        assert note.locator("summary").inner_text().startswith("1 sentence of the draft removed")
        note.locator("summary").click()
        assert "$50 rope fee" in note.inner_text() and "$50" in note.inner_text()
        assert "skipped" not in answer.locator(".meta").inner_text()  # not a skipped backend
        assert serious_violations(page) == []
        browse.shot(page, "dropped")
    finally:
        chat.chain = real
