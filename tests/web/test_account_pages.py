"""Sign-up, sign-in, saved conversations, the profile and billing pages in Chromium."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers import PASSWORD
from tests.web.conftest import DESKTOP, PHONE, Browse, serious_violations
from tests.web.test_chat_page import ask

pytestmark = pytest.mark.one_pass  # see tests/web/conftest.py


def sign_up(page: Any, email: str) -> None:
    page.goto("/sign-up")
    page.get_by_label("Name").fill("Casey Roper")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    page.wait_for_url("**/")


def test_register_ask_reload_then_rename_and_delete_the_conversation(browse: Browse) -> None:
    page, _ = browse.open("/sign-up", size=DESKTOP)
    assert serious_violations(page) == []
    browse.shot(page, "sign-up")
    sign_up(page, "casey@example.com")
    cookies = {c["name"]: c for c in page.context.cookies()}
    assert cookies["rodeoai_session"]["httpOnly"] and cookies["rodeoai_refresh"]["httpOnly"]
    assert page.evaluate("Object.keys(localStorage).length") == 0

    ask(page, "What is a dally?")
    page.wait_for_url("**/c/*")
    conversation = page.url
    page.reload()
    assert page.locator(".msg.user").inner_text() == "What is a dally?"
    assert page.locator(".msg.assistant .sources .source").count() >= 1
    chats = page.locator("#chat-list li")
    chats.first.locator("a").wait_for()
    assert chats.count() == 1 and page.url == conversation
    # the reloaded answer can still be rated, and shows the rating after the next reload
    reloaded = page.locator(".msg.assistant")
    reloaded.get_by_role("button", name="Helpful", exact=True).click()
    reloaded.get_by_text("Thanks for the feedback.").wait_for()
    page.reload()
    helpful = page.locator(".msg.assistant").get_by_role("button", name="Helpful", exact=True)
    assert helpful.get_attribute("aria-pressed") == "true"
    answer_id = int(page.locator(".msg.assistant").get_attribute("data-answer-id") or 0)
    user = browse.site.components.accounts.find_by_email("casey@example.com")
    assert browse.site.components.feedback.ratings(user.id, [answer_id]) == {answer_id: "up"}
    assert serious_violations(page) == []
    browse.shot(page, "conversation")

    chats.first.get_by_role("button", name="Rename").click()
    page.get_by_label("New title").fill("Dally basics")
    page.get_by_role("button", name="Save").click()
    page.locator("#chat-list a", has_text="Dally basics").wait_for()

    page.get_by_label("Search conversations").fill("no such words")
    page.locator("#chat-list", has_text="No chats match").wait_for()
    page.get_by_label("Search conversations").fill("")
    page.locator("#chat-list a", has_text="Dally basics").wait_for()

    chats.first.get_by_role("button", name="Delete Dally basics").click()
    page.get_by_role("button", name="Confirm delete Dally basics").click()
    page.wait_for_url(browse.site.url + "/")
    page.locator("#chat-list", has_text="No saved chats yet").wait_for()


def test_sign_in_errors_profile_and_api_key_shown_once(browse: Browse) -> None:
    page, watch = browse.open("/sign-in", size=PHONE)
    watch.allowed_statuses.add(401)
    sign_up(page, "jo@example.com")
    page.get_by_role("button", name="Sign out").click()
    page.goto("/sign-in")
    page.get_by_label("E-mail").fill("jo@example.com")
    page.get_by_label("Password").fill("wrong password entirely")
    page.get_by_role("button", name="Sign in").click()
    assert page.get_by_role("alert").is_visible()
    assert serious_violations(page) == []
    browse.shot(page, "sign-in-error")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/")

    page.goto("/profile")
    page.get_by_label("Skill level").select_option("advanced")
    page.get_by_label("Heeler").check()
    page.get_by_label("Classification number").fill("4.5")
    page.get_by_role("button", name="Save profile").click()
    page.get_by_text("Profile saved.").wait_for()
    assert page.get_by_label("Skill level").input_value() == "advanced"
    assert page.get_by_label("Heeler").is_checked()

    page.get_by_label("Key name").fill("open-webui")
    page.get_by_role("button", name="Create key").click()
    key = page.locator("#new-key").inner_text()
    assert key.startswith("rk_")
    assert serious_violations(page) == []
    browse.shot(page, "profile")
    page.reload()
    assert key not in page.content()  # shown once, and the reload created no second key
    assert page.get_by_role("button", name="Revoke key open-webui").count() == 1
    page.get_by_role("button", name="Revoke key open-webui").click()
    page.get_by_text("Key revoked.").wait_for()

    page.goto("/")
    assert page.get_by_label("Skill level").input_value() == "advanced"  # from the profile


def test_billing_off_says_so(browse: Browse) -> None:
    page, _ = browse.open("/billing", size=PHONE)
    assert page.get_by_role("heading", name="Billing is off on this box").is_visible()
    assert serious_violations(page) == []
    browse.shot(page, "billing-off")


def test_reset_page_never_says_whether_an_account_exists(browse: Browse) -> None:
    page, _ = browse.open("/reset-password", size=PHONE)
    page.get_by_label("E-mail").fill("nobody@example.com")
    page.get_by_role("button", name="Start a reset").click()
    assert "If the address has an account" in page.get_by_role("status").inner_text()
    assert serious_violations(page) == []
    browse.shot(page, "reset")
