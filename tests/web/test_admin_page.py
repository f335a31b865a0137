"""The admin page in Chromium: a document uploaded and ingested with progress is answered
from at once, with a citation to it; users' roles change from the same page."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import PASSWORD
from tests.web.conftest import DESKTOP, Browse, serious_violations
from tests.web.test_chat_page import ask

pytestmark = pytest.mark.one_pass  # see tests/web/conftest.py

NOTES = """---
title: Wrangler Creek Arena Rules
---
# Wrangler Creek Arena Rules

At Wrangler Creek Arena the barrier for the header is set at eleven feet, and every roper
must check in at the stock office by seven in the morning on jackpot Saturdays.
"""


def sign_in(page: object, email: str) -> None:
    page.goto("/sign-in")  # type: ignore[attr-defined]
    page.get_by_label("E-mail").fill(email)  # type: ignore[attr-defined]
    page.get_by_label("Password").fill(PASSWORD)  # type: ignore[attr-defined]
    page.get_by_role("button", name="Sign in").click()  # type: ignore[attr-defined]
    page.wait_for_url("**/")  # type: ignore[attr-defined]


def test_an_admin_uploads_a_document_watches_it_ingest_and_it_is_cited(
    browse: Browse, tmp_path: Path
) -> None:
    accounts = browse.site.components.accounts
    accounts.create_admin("boss@example.com", PASSWORD)
    page, _ = browse.open("/sign-in", size=DESKTOP)
    sign_in(page, "boss@example.com")
    page.get_by_role("link", name="Admin").click()
    page.wait_for_url("**/admin")
    assert page.locator("#documents tbody tr").count() >= 30
    assert serious_violations(page) == []
    page.get_by_role("button", name="Rebuild search index").click()
    rebuilt = page.locator("#admin-status", has_text="Search index rebuilt")
    rebuilt.wait_for(timeout=60_000)
    components = browse.site.components
    assert f"{components.index.count} passages" in rebuilt.inner_text()
    assert components.index.count == sum(d["chunks"] for d in components.ingestor.documents())

    upload = tmp_path / "wrangler-creek.md"
    upload.write_text(NOTES)
    page.get_by_label("Add or update a document").set_input_files(str(upload))
    page.get_by_role("button", name="Upload").click()
    page.get_by_text("uploads/wrangler-creek.md is in the knowledge base.").wait_for(timeout=60_000)
    assert page.locator("#ingest-progress").get_attribute("value") == "1"
    assert page.locator("#ingest-text").inner_text().startswith("Done")
    row = page.locator('#documents tr[data-source="uploads/wrangler-creek.md"]')
    assert row.count() == 1 and int(row.locator("td").nth(2).inner_text()) >= 1
    browse.shot(page, "admin")

    page.goto("/")
    answer = ask(page, "How far is the barrier set at Wrangler Creek Arena?")
    sources = answer.locator(".sources .source").all_inner_texts()
    assert any("Wrangler Creek Arena Rules" in s for s in sources), sources


def test_an_admin_makes_a_user_an_expert_and_a_user_cannot_open_admin(browse: Browse) -> None:
    accounts = browse.site.components.accounts
    accounts.create_admin("chief@example.com", PASSWORD)
    page, watch = browse.open("/sign-up", size=DESKTOP)
    watch.allowed_statuses.add(403)
    page.get_by_label("E-mail").fill("helper@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    page.wait_for_url("**/")
    page.goto("/admin")
    assert page.get_by_role("heading", name="Administrators only").is_visible()

    page.get_by_role("button", name="Sign out").click()
    sign_in(page, "chief@example.com")
    page.goto("/admin")
    page.get_by_label("Role of helper@example.com").select_option("expert")
    page.get_by_role("button", name="Save helper@example.com").click()
    page.locator("#admin-status", has_text="Saved.").wait_for()
    assert accounts.find_by_email("helper@example.com").role == "expert"
