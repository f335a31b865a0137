"""Billing: offline mode, quotas and atomic debits, and webhooks we sign ourselves, checked
against a real Stripe-compatible server (localstripe) that the objects are re-fetched from."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import stripe
from fastapi.testclient import TestClient
from sqlmodel import select

from server.billing.plans import BadSignature, QuotaExceeded, verify_signature
from server.components import Components
from server.config import Settings
from server.db import LedgerEntry, User, read_session
from server.main import create_app
from tests.conftest import MakeSettings, run_cli

SECRET = "whsec_test_secret"
PASSWORD = "a long enough password"


def sign(payload: bytes, *, secret: str = SECRET, stamp: int | None = None) -> str:
    stamp = int(time.time()) if stamp is None else stamp
    digest = hmac.new(secret.encode(), f"{stamp}.".encode() + payload, hashlib.sha256)
    return f"t={stamp},v1={digest.hexdigest()}"


def event(event_id: str, kind: str, obj: dict[str, Any]) -> bytes:
    return json.dumps(
        {"id": event_id, "type": kind, "object": "event", "data": {"object": obj}}
    ).encode()


def sign_in(api: TestClient, email: str) -> dict[str, str]:
    api.post("/api/auth/register", json={"email": email, "password": PASSWORD})
    token = api.post("/api/auth/login", json={"email": email, "password": PASSWORD}).json()
    return {"Authorization": f"Bearer {token['access_token']}"}


def user_row(components: Components, email: str) -> User:
    with read_session(components.engine) as session:
        user = session.exec(select(User).where(User.email == email)).one()
    return user


# --- offline mode and quotas --------------------------------------------------------------
def test_offline_billing_routes_say_so_and_the_default_plan_applies(
    make_settings: MakeSettings,
) -> None:
    with TestClient(create_app(make_settings())) as api:
        plans = api.get("/api/billing/plans").json()
        assert plans["billing_enabled"] is False and plans["default_plan"] == "free"
        me = sign_in(api, "offline@example.com")
        for path in (
            "/api/billing/subscribe",
            "/api/billing/purchase",
            "/api/billing/cancel",
            "/api/billing/resume",
        ):
            response = api.post(path, headers=me, json={})
            assert response.status_code == 503, path
            assert response.json()["error"]["code"] == "billing_disabled"
        webhook = api.post("/api/billing/webhook", content=b"{}")
        assert webhook.status_code == 503
        status = api.get("/api/billing/status", headers=me).json()
        assert (status["plan"], status["daily_messages"], status["credits"]) == ("free", 20, 0)


def test_quota_then_credits_then_402_naming_the_plan(kb_settings: Settings) -> None:
    settings = kb_settings.model_copy(update={"free_daily_messages": 2, "backends": "extractive"})
    with TestClient(create_app(settings)) as api:
        me = sign_in(api, "quota@example.com")
        ask = {"messages": [{"role": "user", "content": "What is a hazer?"}]}
        assert [api.post("/api/chat", headers=me, json=ask).status_code for _ in range(2)] == [
            200,
            200,
        ]
        over = api.post("/api/chat", headers=me, json=ask)
        assert over.status_code == 402
        assert over.json()["error"]["code"] == "quota_exceeded"
        assert "Free plan" in over.json()["error"]["message"]

        granted = run_cli(
            "billing",
            "grant",
            "quota@example.com",
            "--credits",
            "1",
            "--note",
            "paid cash",
            data_dir=settings.data_dir,
        )
        assert granted.returncode == 0, granted.stderr
        assert "1 credits" in granted.stdout
        assert api.post("/api/chat", headers=me, json=ask).status_code == 200  # the credit
        assert api.post("/api/chat", headers=me, json=ask).status_code == 402
        status = api.get("/api/billing/status", headers=me).json()
        assert (status["quota_left_today"], status["credits"]) == (0, 0)
        history = api.get("/api/billing/history", headers=me).json()
        assert any(h.get("note") == "paid cash" for h in history)


def test_twenty_concurrent_debits_with_five_left_pass_exactly_five(
    make_settings: MakeSettings,
) -> None:
    components = Components(make_settings(free_daily_messages=1))
    components.accounts.register(
        email="race@example.com", password=PASSWORD, display_name="", ip="t"
    )
    user = user_row(components, "race@example.com")
    components.billing.debit_message(user.id)  # today's free question is used
    components.billing.grant(user.id or 0, credits=5)
    barrier = threading.Barrier(20)

    def attempt(_: int) -> str:
        barrier.wait()
        try:
            components.billing.debit_message(user.id)
            return "ok"
        except QuotaExceeded:
            return "refused"

    with ThreadPoolExecutor(20) as pool:
        outcomes = list(pool.map(attempt, range(20)))
    assert outcomes.count("ok") == 5 and outcomes.count("refused") == 15
    after = user_row(components, "race@example.com")
    assert after.credits == 0
    with read_session(components.engine) as session:
        deltas = [e.delta for e in session.exec(select(LedgerEntry))]
    assert sum(deltas) == 0 and deltas.count(-1) == 5


# --- webhooks against localstripe ---------------------------------------------------------
def stripe_settings(make_settings: MakeSettings, url: str, **extra: Any) -> Settings:
    return make_settings(
        stripe_api_key="sk_test_rodeoai", stripe_api_base=url, stripe_webhook_secret=SECRET, **extra
    )


def stripe_client(url: str) -> Any:
    return stripe.StripeClient("sk_test_rodeoai", base_addresses={"api": url})


def paid_intent(api: TestClient, headers: dict[str, str], url: str) -> str:
    """A credit-pack order whose PaymentIntent really succeeded at the fake Stripe."""
    card = stripe_client(url).v1.payment_methods.create(
        params={
            "type": "card",
            "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123"},
        }
    )
    order = api.post(
        "/api/billing/purchase", headers=headers, json={"payment_method": card["id"]}
    ).json()
    assert order["client_secret"].startswith(order["payment_intent"])
    confirmed = stripe_client(url).v1.payment_intents.confirm(order["payment_intent"])
    assert confirmed["status"] == "succeeded"
    return str(order["payment_intent"])


def credits_of(api: TestClient, headers: dict[str, str]) -> int:
    return int(api.get("/api/billing/status", headers=headers).json()["credits"])


def test_same_event_ten_times_in_a_row_and_at_once_grants_once(
    make_settings: MakeSettings, localstripe: str
) -> None:
    with TestClient(create_app(stripe_settings(make_settings, localstripe))) as api:
        me = sign_in(api, "dupe@example.com")
        intent = paid_intent(api, me, localstripe)
        assert credits_of(api, me) == 0  # paying is not enough: only the webhook fulfils
        body = event("evt_dupe_1", "payment_intent.succeeded", {"id": intent})
        outcomes = [
            api.post(
                "/api/billing/webhook", content=body, headers={"Stripe-Signature": sign(body)}
            ).json()["status"]
            for _ in range(10)
        ]
        assert outcomes == ["processed"] + ["duplicate"] * 9
        body2 = event("evt_dupe_2", "payment_intent.succeeded", {"id": intent})
        with ThreadPoolExecutor(10) as pool:
            codes = list(
                pool.map(
                    lambda _: (
                        api.post(
                            "/api/billing/webhook",
                            content=body2,
                            headers={"Stripe-Signature": sign(body2)},
                        ).status_code
                    ),
                    range(10),
                )
            )
        assert codes == [200] * 10
        assert credits_of(api, me) == 100  # one grant for the order, whatever the event id


@pytest.mark.parametrize("offset", [-301, 301])
def test_the_signature_window_is_300_seconds_each_way(offset: int) -> None:
    """The edge itself, on a fixed clock (a request's own clock moves while it is sent)."""
    body, now = b'{"id": "evt_edge"}', 1_900_000_000
    for inside in (offset - 1 if offset > 0 else offset + 1, 0):
        verify_signature(body, sign(body, stamp=now + inside), SECRET, tolerance=300, now=now)
    with pytest.raises(BadSignature):
        verify_signature(body, sign(body, stamp=now + offset), SECRET, tolerance=300, now=now)


@pytest.mark.parametrize(
    "tamper", ["bad_secret", "one_byte", "old", "future", "missing", "garbage_header"]
)
def test_bad_signatures_get_400_and_change_nothing(
    make_settings: MakeSettings, localstripe: str, tamper: str
) -> None:
    with TestClient(create_app(stripe_settings(make_settings, localstripe))) as api:
        me = sign_in(api, f"{tamper}@example.com")
        intent = paid_intent(api, me, localstripe)
        body = event(f"evt_{tamper}", "payment_intent.succeeded", {"id": intent})
        # A minute past the 300 s tolerance each way: the request is checked a moment after
        # `now`, and on a busy machine 301 s in the future had become 299 by then.
        now = int(time.time())
        headers = {
            "bad_secret": {"Stripe-Signature": sign(body, secret="whsec_other")},
            "one_byte": {"Stripe-Signature": sign(body)},
            "old": {"Stripe-Signature": sign(body, stamp=now - 360)},
            "future": {"Stripe-Signature": sign(body, stamp=now + 360)},
            "missing": {},
            "garbage_header": {"Stripe-Signature": "nonsense"},
        }[tamper]
        sent = body.replace(b'"type"', b'"typE"') if tamper == "one_byte" else body
        response = api.post("/api/billing/webhook", content=sent, headers=headers)
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "bad_signature"
        assert credits_of(api, me) == 0


def test_shuffled_subscription_events_reach_the_same_final_state(
    make_settings: MakeSettings, localstripe: str
) -> None:
    client = stripe_client(localstripe)
    product = client.v1.products.create(params={"name": "Pro", "type": "service"})
    plan = client.v1.plans.create(
        params={"product": product["id"], "amount": 1500, "currency": "usd", "interval": "month"}
    )
    settings = stripe_settings(make_settings, localstripe, stripe_pro_plan_id=plan["id"])
    finals = set()
    with TestClient(create_app(settings)) as api:
        for order_number, order in enumerate(
            itertools.permutations(
                ["customer.subscription.created", "invoice.paid", "customer.subscription.deleted"]
            )
        ):
            email = f"shuffle{order_number}@example.com"
            me = sign_in(api, email)
            card = client.v1.payment_methods.create(
                params={
                    "type": "card",
                    "card": {
                        "number": "4242424242424242",
                        "exp_month": 12,
                        "exp_year": 2030,
                        "cvc": "123",
                    },
                }
            )
            sub = api.post(
                "/api/billing/subscribe", headers=me, json={"payment_method": card["id"]}
            ).json()["subscription"]
            client.v1.subscriptions.cancel(sub)  # Stripe's truth: the subscription ended
            for n, kind in enumerate(order):
                obj = {"id": sub} if kind.startswith("customer.") else {"subscription": sub}
                body = event(f"evt_{order_number}_{n}", kind, obj)
                assert (
                    api.post(
                        "/api/billing/webhook",
                        content=body,
                        headers={"Stripe-Signature": sign(body)},
                    ).status_code
                    == 200
                )
            status = api.get("/api/billing/status", headers=me).json()
            finals.add((status["plan"], status["subscription_status"]))
    assert finals == {("free", "canceled")}


def test_unknown_events_are_acknowledged_and_ignored(
    make_settings: MakeSettings, localstripe: str
) -> None:
    with TestClient(create_app(stripe_settings(make_settings, localstripe))) as api:
        body = event("evt_unknown", "customer.tax_id.created", {"id": "txi_1"})
        response = api.post(
            "/api/billing/webhook", content=body, headers={"Stripe-Signature": sign(body)}
        )
        assert response.status_code == 200 and response.json()["status"] == "ignored"


def test_reconcile_replays_missed_events_once(
    make_settings: MakeSettings, localstripe: str
) -> None:
    settings = stripe_settings(make_settings, localstripe)
    components = Components(settings)
    components.accounts.register(
        email="missed@example.com", password=PASSWORD, display_name="", ip="t"
    )
    user = user_row(components, "missed@example.com")
    card = stripe_client(localstripe).v1.payment_methods.create(
        params={
            "type": "card",
            "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123"},
        }
    )
    order = components.payments.purchase(user, payment_method=card["id"])
    stripe_client(localstripe).v1.payment_intents.confirm(order["payment_intent"])
    assert user_row(components, "missed@example.com").credits == 0  # no webhook reached us
    env = {
        "RODEOAI_STRIPE_API_KEY": "sk_test_rodeoai",
        "RODEOAI_STRIPE_API_BASE": localstripe,
        "RODEOAI_STRIPE_WEBHOOK_SECRET": SECRET,
    }
    first = run_cli("billing", "reconcile", data_dir=settings.data_dir, extra_env=env)
    assert first.returncode == 0, first.stderr
    assert user_row(components, "missed@example.com").credits == 100
    again = run_cli("billing", "reconcile", data_dir=settings.data_dir, extra_env=env)
    assert again.returncode == 0 and " 0 processed" in f" {again.stdout}"
    assert user_row(components, "missed@example.com").credits == 100


def test_failed_payment_marks_the_order_failed_and_grants_nothing(
    make_settings: MakeSettings, localstripe: str
) -> None:
    with TestClient(create_app(stripe_settings(make_settings, localstripe))) as api:
        me = sign_in(api, "declined@example.com")
        client = stripe_client(localstripe)
        card = client.v1.payment_methods.create(
            params={
                "type": "card",
                "card": {
                    "number": "4000000000000341",
                    "exp_month": 12,
                    "exp_year": 2030,
                    "cvc": "123",
                },
            }
        )
        order = api.post(
            "/api/billing/purchase", headers=me, json={"payment_method": card["id"]}
        ).json()
        try:
            declined = client.v1.payment_intents.confirm(order["payment_intent"])["status"]
        except stripe.StripeError:
            declined = "card_error"
        assert declined != "succeeded"
        body = event(
            "evt_declined", "payment_intent.payment_failed", {"id": order["payment_intent"]}
        )
        assert (
            api.post(
                "/api/billing/webhook", content=body, headers={"Stripe-Signature": sign(body)}
            ).status_code
            == 200
        )
        history = api.get("/api/billing/history", headers=me).json()
        assert [h["status"] for h in history if h["type"] == "order"] == ["failed"]
        assert credits_of(api, me) == 0


def test_refund_made_in_stripe_takes_back_credits_via_charge_refunded(
    make_settings: MakeSettings, localstripe: str
) -> None:
    with TestClient(create_app(stripe_settings(make_settings, localstripe))) as api:
        me = sign_in(api, "refunded@example.com")
        intent = paid_intent(api, me, localstripe)
        paid = event("evt_paid_r", "payment_intent.succeeded", {"id": intent})
        api.post("/api/billing/webhook", content=paid, headers={"Stripe-Signature": sign(paid)})
        assert credits_of(api, me) == 100
        refund = stripe_client(localstripe).v1.refunds.create(
            params={"payment_intent": intent, "amount": 100}
        )  # made in the dashboard
        body = event(
            "evt_refund",
            "charge.refunded",
            {
                "id": "ch_x",
                "payment_intent": intent,
                "refunds": {"data": [{"id": refund["id"], "amount": 100}]},
            },
        )
        for _ in range(2):  # delivered twice, applied once
            api.post("/api/billing/webhook", content=body, headers={"Stripe-Signature": sign(body)})
        assert credits_of(api, me) == 80  # a fifth of the price, a fifth of the credits


def test_free_plans_and_guests_get_local_one_pass(
    make_settings: MakeSettings, kb_settings: Settings
) -> None:
    import asyncio

    from tests.servers import free_port

    settings = kb_settings.model_copy(
        update={
            "backends": "openai,extractive",
            "openai_base_url": f"http://127.0.0.1:{free_port()}",
            "openai_api_key": None,
            "backend_cooldown_s": 0.0,
        }
    )
    components = Components(settings)
    ask = [{"role": "user", "content": "What is a hazer?"}]
    guest = asyncio.run(components.chat.answer(ask, guest_key="1.2.3.4"))
    assert guest.skipped_backends[0] == {"backend": "openai", "reason": "not included in the plan"}
    components.accounts.register(
        email="pro@example.com", password=PASSWORD, display_name="", ip="t"
    )
    user = user_row(components, "pro@example.com")
    components.billing.grant(user.id or 0, plan="pro")
    pro = asyncio.run(components.chat.answer(ask, user_id=user.id))
    assert pro.skipped_backends[0]["backend"] == "openai"
    assert pro.skipped_backends[0]["reason"] != "not included in the plan"  # it was tried


def test_guest_daily_limit_asks_guests_to_sign_in(kb_settings: Settings) -> None:
    settings = kb_settings.model_copy(
        update={"guest_daily_messages": 1, "backends": "extractive", "trust_forwarded_for": True}
    )
    with TestClient(create_app(settings)) as api:
        ask = {"messages": [{"role": "user", "content": "What is a hazer?"}]}
        guest = {"X-Forwarded-For": "203.0.113.77"}  # an address no other test has used
        assert api.post("/api/chat", json=ask, headers=guest).status_code == 200
        over = api.post("/api/chat", json=ask, headers=guest)
        assert over.status_code == 402 and "sign in" in over.json()["error"]["message"]
        other = api.post("/api/chat", json=ask, headers={"X-Forwarded-For": "203.0.113.78"})
        assert other.status_code == 200  # counted per address
