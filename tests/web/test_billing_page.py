"""The billing page with billing on, in Chromium, against localstripe: Stripe.js takes the
card, only the payment method's id reaches the box, and the subscription is created with it
as the customer's default. Only this page's CSP lets Stripe's hosts in.

Stripe.js itself cannot run here: it is served from js.stripe.com, which this machine cannot
reach, and it talks to Stripe's live API. The test serves a stand-in at that address that
creates nothing itself: it hands the page a payment method the test made on localstripe,
so everything from the page onwards (our script, our API, localstripe) is real."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import stripe

from server.main import create_app
from tests.billing.test_billing_e2e import CARD
from tests.conftest import settings_for
from tests.helpers import PASSWORD
from tests.servers import copy_data, serving
from tests.web.conftest import DESKTOP, Browse, Site, serious_violations

pytestmark = pytest.mark.one_pass  # see tests/web/conftest.py

STRIPE_JS = "https://js.stripe.com/v3/"
STAND_IN = """window.Stripe = (key) => ({
  key,
  elements: () => ({ create: () => ({ mount: (node) => {
    const input = document.createElement("input");
    input.setAttribute("aria-label", "Card number");
    node.append(input);
  } }) }),
  createPaymentMethod: async () => ({ paymentMethod: { id: "%s" } }),
  confirmCardPayment: async () => ({ paymentIntent: { status: "succeeded" } }),
});"""


@pytest.fixture(scope="module")
def site(
    shared_data: Path, tmp_path_factory: pytest.TempPathFactory, localstripe: str
) -> Iterator[Site]:
    """This file's server: billing on, through localstripe, with a publishable key."""
    data = copy_data(shared_data, tmp_path_factory.mktemp("billing-web") / "data")
    settings = settings_for(
        data,
        backends="extractive",
        stripe_api_key="sk_test_rodeoai",
        stripe_api_base=localstripe,
        stripe_webhook_secret="whsec_test_secret",
        stripe_publishable_key="pk_test_rodeoai",
    )
    plan = create_app(settings).state.components.payments.sync_plans()
    app = create_app(settings.model_copy(update={"stripe_pro_plan_id": plan}))
    with serving(app) as url:
        yield Site(url, app.state.components)
    app.state.components.close()


def _sign_up(page: Any, email: str) -> None:
    page.goto("/sign-up")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    page.wait_for_url("**/")


def test_a_card_entered_with_stripe_js_becomes_the_subscriptions_payment_method(
    browse: Browse, localstripe: str
) -> None:
    stripe_api = stripe.StripeClient("sk_test_rodeoai", base_addresses={"api": localstripe})
    method = stripe_api.v1.payment_methods.create(params={"type": "card", "card": CARD})
    page, _ = browse.open("/sign-in", size=DESKTOP)
    loaded: list[str] = []

    def stand_in(route: Any) -> None:
        loaded.append(route.request.url)
        route.fulfill(content_type="text/javascript", body=STAND_IN % method["id"])

    page.route(STRIPE_JS, stand_in)
    _sign_up(page, "payer@example.com")
    page.goto("/billing")
    assert loaded == [STRIPE_JS]
    assert page.get_by_label("Card number").is_visible()
    assert serious_violations(page) == []
    browse.shot(page, "card-entry")

    page.get_by_role("button", name="Subscribe to Pro").click()
    page.locator("#billing-status", has_text="Subscription started").wait_for()
    user = browse.site.components.accounts.find_by_email("payer@example.com")
    customer_id = browse.site.components.payments.customer_for(user)
    customer = stripe_api.v1.customers.retrieve(customer_id)
    assert customer["invoice_settings"]["default_payment_method"] == method["id"]


def test_only_the_billing_page_lets_stripe_in_and_offline_it_says_so(browse: Browse) -> None:
    page, watch = browse.open("/sign-in", size=DESKTOP)
    page.route(STRIPE_JS, lambda route: route.abort())  # a box with no internet
    watch.allowed_errors.append("ERR_FAILED")
    _sign_up(page, "offline@example.com")
    page.goto("/billing")
    page.locator("#billing-status", has_text="Card entry needs a connection to Stripe").wait_for()

    client = httpx.Client(base_url=browse.site.url, cookies=dict(_cookies(page)))
    billing_csp = client.get("/billing").headers["content-security-policy"]
    assert "script-src 'self' https://js.stripe.com;" in billing_csp
    for other in ("/", "/profile", "/docs"):
        csp = client.get(other).headers["content-security-policy"]
        assert "stripe" not in csp and "script-src 'self';" in csp, other


def _cookies(page: Any) -> Iterator[tuple[str, str]]:
    for cookie in page.context.cookies():
        yield cookie["name"], cookie["value"]
