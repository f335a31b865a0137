"""The analytics page in Chromium: questions per day over a seeded week, feedback by backend
and skill level, and a question the knowledge base cannot answer, thumbed down in the chat,
heading "What to write next"."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from server.db import AnswerMetric, utcnow, write_session
from tests.helpers import PASSWORD
from tests.web.conftest import DESKTOP, PHONE, Browse, serious_violations
from tests.web.test_admin_page import sign_in
from tests.web.test_chat_page import ask

pytestmark = pytest.mark.one_pass  # see tests/web/conftest.py

OFF_TOPIC = "What is the capital of France?"
# The best score fusion gives (first in both rankings at rrf_k 60): no gap here.
GOOD_SOURCE = json.dumps(
    [{"n": 1, "source": "knowledge/ropes.md", "title": "Ropes", "score": 2 / 61}]
)


def _seed_week(browse: Browse) -> None:
    """Three answers two days ago and one five days ago, all by the extractive backend."""
    with write_session(browse.site.components.engine) as session:
        for age, latency in ((2, 400), (2, 500), (2, 600), (5, 700)):
            session.add(
                AnswerMetric(
                    question="How long is a heading rope?",
                    response="About 30 to 35 feet [1].",
                    chunks_used=1,
                    sources_json=GOOD_SOURCE,
                    model="extractive",
                    backend="extractive",
                    skill_level="intermediate",
                    latency_ms=latency,
                    created_at=utcnow() - timedelta(days=age),
                )
            )


def test_an_admin_reads_the_analytics_and_the_knowledge_gaps(browse: Browse) -> None:
    # The site's copy of the shared data may already hold other tests' answers (all today).
    before = browse.site.components.analytics.report(7)
    intermediate = {r["skill_level"]: r["answers"] for r in before["by_skill_level"]}
    _seed_week(browse)
    browse.site.components.accounts.create_admin("stats@example.com", PASSWORD)
    page, _ = browse.open("/sign-in", size=DESKTOP)
    sign_in(page, "stats@example.com")
    answer = ask(page, OFF_TOPIC)
    answer.get_by_role("button", name="Not helpful").click()
    answer.get_by_text("Thanks for the feedback.").wait_for()

    page.goto("/admin")
    page.get_by_role("navigation", name="Admin").get_by_role("link", name="Analytics").click()
    page.wait_for_url("**/admin/analytics")
    page.get_by_label("Period").select_option("7")
    page.get_by_role("button", name="Show").click()
    page.wait_for_url("**/admin/analytics?days=7")
    facts = page.locator("section", has=page.get_by_role("heading", name="Answers"))
    assert f"Questions\n{before['totals']['questions'] + 5}" in facts.inner_text()
    assert page.locator(".chart rect").count() == 7
    heights = [
        float(h or 0)
        for h in page.locator(".chart rect").evaluate_all(
            "bars => bars.map(b => b.getAttribute('height'))"
        )
    ]
    # Bars for 2 and 5 days ago (seeded), today (the admin's question) and any day the
    # shared data already had answers on (a run that crosses midnight UTC has two).
    earlier = {d["date"] for d in before["per_day"] if d["questions"]}
    days = [(utcnow() - timedelta(days=6 - i)).date().isoformat() for i in range(7)]
    expected = [d in earlier or i in {1, 4, 6} for i, d in enumerate(days)]
    assert [h > 0 for h in heights] == expected, (heights, days, earlier)
    if days[4] not in earlier and days[1] not in earlier:  # only the seeded answers there
        assert heights[-3] == pytest.approx(3 * heights[-6], abs=0.05)  # three, then one
    page.get_by_text("As a table").click()
    two_days_ago = (utcnow() - timedelta(days=2)).date().isoformat()
    assert page.get_by_role("row", name=f"{two_days_ago} 3 3 0 0").count() == 1

    skills = page.locator("section", has=page.get_by_role("heading", name="By skill level"))
    # the four seeded answers, and the admin's question at the profile's default level
    shown = skills.get_by_role("row", name="intermediate").locator("td").first.inner_text()
    assert int(shown) == intermediate.get("intermediate", 0) + 5
    gaps = page.locator("section", has=page.get_by_role("heading", name="What to write next"))
    mine = gaps.locator(".gap", has_text=OFF_TOPIC)
    assert mine.count() == 1 and "1 thumbs-down" in mine.inner_text()
    assert "knowledge/" in mine.inner_text()
    needs = [int(n.split()[1]) for n in gaps.locator(".gap h3 .muted").all_inner_texts()]
    assert needs == sorted(needs, reverse=True) and needs[0] >= 3  # the most needed first
    assert serious_violations(page) == []
    browse.shot(page, "analytics")

    phone, _ = browse.open("/sign-in", size=PHONE)
    sign_in(phone, "stats@example.com")
    phone.goto("/admin/analytics?days=oops")  # an odd address falls back to 30 days
    assert phone.get_by_label("Period").input_value() == "30"
    assert serious_violations(phone) == []
    browse.shot(phone, "analytics")
