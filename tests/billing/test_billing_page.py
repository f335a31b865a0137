"""The /billing page with billing on, read as the signed-in user sees it (the browser tests
cover billing off; a card form needs Stripe.js, which is not part of this page yet)."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from server.main import create_app
from tests.conftest import MakeSettings
from tests.helpers import PASSWORD


def test_billing_page_shows_plan_quota_credits_and_history(make_settings: MakeSettings) -> None:
    settings = make_settings(stripe_api_key="sk_test_page", backends="extractive")
    with TestClient(create_app(settings)) as web:
        web.post("/api/auth/register", json={"email": "pay@example.com", "password": PASSWORD})
        token = web.post(
            "/api/auth/login", json={"email": "pay@example.com", "password": PASSWORD}
        ).json()["access_token"]
        components = web.app.state.components  # type: ignore[attr-defined]
        user = components.accounts.find_by_email("pay@example.com")
        components.billing.grant(user.id, credits=25, note="arena raffle")
        assert "sign-in" in str(web.get("/billing", follow_redirects=False).headers["location"])
        web.cookies.set("rodeoai_session", token)
        page = re.sub(r"\s+", " ", web.get("/billing").text)
    assert '<dd id="plan-name">Free</dd>' in page
    assert '<dd id="quota-left">20</dd>' in page and '<dd id="credits">25</dd>' in page
    assert "15.00 USD a month" in page and 'data-action="subscribe"' in page
    assert "arena raffle" in page and "+25 credits" in page
