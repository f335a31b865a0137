"""The experiments page in Chromium: an admin starts an A/B test from the form, a question
asked in the chat lands in one variant's results, and promoting a variant makes it the
default that answers outside experiments."""

from __future__ import annotations

import pytest

from tests.helpers import PASSWORD
from tests.web.conftest import DESKTOP, PHONE, Browse, serious_violations
from tests.web.test_admin_page import sign_in
from tests.web.test_chat_page import ask

pytestmark = pytest.mark.one_pass  # see tests/web/conftest.py


def test_an_admin_starts_an_experiment_watches_it_and_promotes_a_variant(
    browse: Browse,
) -> None:
    browse.site.components.accounts.create_admin("coach@example.com", PASSWORD)
    page, _ = browse.open("/sign-in", size=DESKTOP)
    sign_in(page, "coach@example.com")
    page.get_by_role("link", name="Admin").click()
    page.get_by_role("navigation", name="Admin").get_by_role("link", name="Experiments").click()
    page.wait_for_url("**/admin/experiments")
    assert page.get_by_text("No experiments yet.").is_visible()
    assert page.get_by_text("answered with the server's defaults").is_visible()

    page.get_by_label("Name", exact=True).first.fill("concise lexical")
    challenger = page.locator("fieldset.variant").nth(1)
    challenger.get_by_label("Prompt style").select_option("concise")
    challenger.get_by_label("Retrieval").select_option("lexical")
    challenger.get_by_label("Weight").fill("30")
    page.get_by_role("button", name="Add a variant").click()
    assert page.locator("fieldset.variant").count() == 3
    page.locator("fieldset.variant").nth(2).get_by_label("Passages (top k)").fill("2")
    page.get_by_role("button", name="Start").click()
    card = page.locator("section.experiment", has_text="concise lexical")
    card.get_by_text("running", exact=True).wait_for()
    assert "prompt style concise, retrieval lexical" in card.inner_text()
    assert "top k 2" in card.inner_text()
    assert "30 (23%)" in card.inner_text()  # the weight and its share of 130
    assert page.get_by_text("Stop concise lexical first").is_visible()
    started = browse.site.components.experiments.list()[0]
    assert started["status"] == "running"
    assert [v["weight"] for v in started["variants"]] == [50, 30, 50]

    page.goto("/")
    ask(page, "How many wraps is a dally?")
    page.goto("/admin/experiments")
    counts = card.locator("tbody tr td:nth-child(4)").all_inner_texts()
    assert sorted(int(c) for c in counts) == [0, 0, 1], counts
    assert serious_violations(page) == []
    browse.shot(page, "running")

    card.get_by_role("button", name="Promote challenger of concise lexical").click()
    page.locator("#default-variant", has_text="promoted variant challenger").wait_for()
    assert (
        "prompt style concise, retrieval lexical" in page.locator("#default-variant").inner_text()
    )
    assert card.get_by_text("stopped", exact=True).is_visible()
    assert browse.site.components.experiments.default() == {
        "name": "challenger",
        "weight": 30.0,
        "prompt_style": "concise",
        "retrieval": "lexical",
    }
    assert page.get_by_label("Name", exact=True).first.is_visible()  # the form is back
    phone, _ = browse.open("/admin/experiments", size=PHONE)
    sign_in(phone, "coach@example.com")
    phone.goto("/admin/experiments")
    assert serious_violations(phone) == []
    browse.shot(phone, "promoted")


def test_the_experiments_page_is_for_admins_only(browse: Browse) -> None:
    page, watch = browse.open("/admin/experiments", size=DESKTOP)
    page.wait_for_url("**/sign-in?next=/admin/experiments")
    watch.allowed_statuses.add(403)
    page.goto("/sign-up")
    page.get_by_label("E-mail").fill("roper@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    page.wait_for_url("**/")
    page.goto("/admin/experiments")
    assert page.get_by_role("heading", name="Administrators only").is_visible()
