"""Feedback and review in Chromium: a guest's thumbs-down with a comment puts the answer at
the head of an expert's review queue, where the expert saves a corrected answer."""

from __future__ import annotations

import pytest

from tests.helpers import PASSWORD
from tests.web.conftest import DESKTOP, PHONE, Browse, serious_violations
from tests.web.test_admin_page import sign_in
from tests.web.test_chat_page import ask

pytestmark = pytest.mark.one_pass  # see tests/web/conftest.py

QUESTION = "How many wraps is a dally?"


def test_thumbs_down_with_a_comment_heads_the_review_queue(browse: Browse) -> None:
    page, _ = browse.open("/", size=PHONE)
    answer = ask(page, QUESTION)
    answer.get_by_role("button", name="Not helpful").click()
    answer.get_by_label("What was wrong? (optional)").fill("It never says how many wraps.")
    answer.get_by_role("button", name="Send comment").click()
    answer.get_by_text("Comment sent").wait_for()
    assert answer.get_by_role("button", name="Not helpful").get_attribute("aria-pressed") == "true"
    assert serious_violations(page) == []
    browse.shot(page, "feedback")

    accounts = browse.site.components.accounts
    accounts.create_admin("vet@example.com", PASSWORD)
    reviewer, _ = browse.open("/sign-in", size=DESKTOP)
    sign_in(reviewer, "vet@example.com")
    reviewer.get_by_role("link", name="Review").click()
    reviewer.wait_for_url("**/review")
    first = reviewer.locator(".review-item").first
    assert first.locator(".question").inner_text() == QUESTION
    assert "It never says how many wraps." in first.inner_text()
    assert serious_violations(reviewer) == []
    browse.shot(reviewer, "review")

    answer_id = int(first.get_attribute("data-answer") or 0)
    first.get_by_label("Rating").select_option("2")
    first.get_by_label("Corrected answer").fill("A dally is usually one to two wraps.")
    first.get_by_label("Knowledge gap").fill("wrap count")
    first.get_by_role("button", name="Save review").click()
    reviewer.locator("#review-status", has_text="Review saved.").wait_for()
    assert reviewer.locator(f'.review-item[data-answer="{answer_id}"]').count() == 0
    queue = browse.site.components.review.queue(limit=200)
    assert answer_id not in {item["answer_id"] for item in queue}
