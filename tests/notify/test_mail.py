"""E-mail from the app's events, delivered to a real SMTP server: a welcome on sign-up, reset
links that work, receipts and billing notices once per Stripe object however often its
webhooks come, and with no SMTP host, today's hand-over by an administrator."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import stripe
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlmodel import col, select

from server.components import Components
from server.config import Settings
from server.db import BillingCustomer, MailOutbox, User, read_session, write_session
from server.main import create_app
from server.notify import MailSender, SmtpTransport
from tests.conftest import MakeSettings
from tests.helpers import PASSWORD, bearer
from tests.notify.conftest import PUBLIC_URL, SENDER, MailSettings, SmtpServer


def outbox(components: Components) -> list[MailOutbox]:
    with read_session(components.engine) as session:
        return list(session.exec(select(MailOutbox).order_by(col(MailOutbox.id))).all())


def register(api: TestClient, email: str, password: str = PASSWORD) -> None:
    reply = api.post("/api/auth/register", json={"email": email, "password": password})
    assert reply.status_code == 202


def sign_in(api: TestClient, email: str, password: str = PASSWORD) -> dict[str, str]:
    reply = api.post("/api/auth/login", json={"email": email, "password": password})
    assert reply.status_code == 200, reply.text
    return bearer(reply.json()["access_token"])


@pytest.fixture
def app(smtp: SmtpServer, mail_settings: MailSettings) -> Iterator[TestClient]:
    with TestClient(create_app(mail_settings(smtp))) as api:
        yield api


def components_of(api: TestClient) -> Components:
    components: Components = api.app.state.components  # type: ignore[attr-defined]
    return components


def test_sign_up_sends_one_welcome_mail_to_the_new_address(
    app: TestClient, smtp: SmtpServer
) -> None:
    register(app, "Rider@Example.com")
    [mail] = smtp.inbox.wait_for(1)
    assert mail["To"] == "rider@example.com" and mail["From"] == SENDER
    assert mail["Subject"] == "Welcome to RodeoAI"
    assert f"{PUBLIC_URL}/sign-in" in mail.get_content()
    assert smtp.inbox.envelopes == [("rodeo@club.example", ["rider@example.com"])]
    register(app, "rider@example.com")  # taken: the same reply, and no second welcome
    [row] = outbox(components_of(app))
    assert (row.dedupe_key, row.message_id) == (f"welcome:user:{row.id}", mail["Message-ID"])


def test_a_reset_link_arrives_by_mail_and_sets_the_password(
    app: TestClient, smtp: SmtpServer
) -> None:
    register(app, "lost@example.com")
    smtp.inbox.wait_for(1)
    known = app.post("/api/auth/password-reset", json={"email": "lost@example.com"})
    unknown = app.post("/api/auth/password-reset", json={"email": "nobody@example.com"})
    assert known.status_code == unknown.status_code == 202
    assert known.json() == unknown.json()  # the reply never tells which exists
    assert "on its way" in known.json()["message"]
    mail = smtp.inbox.wait_for(2)[1]
    assert mail["To"] == "lost@example.com"
    assert mail["Subject"] == "Reset your RodeoAI password"
    link = re.search(r"https://\S+", mail.get_content())
    assert link and link.group().startswith(f"{PUBLIC_URL}/reset-password?token=")
    token = parse_qs(urlparse(link.group()).query)["token"][0]
    body = {"token": token, "new_password": "a brand new password"}
    assert app.post("/api/auth/password-reset/confirm", json=body).status_code == 204
    sign_in(app, "lost@example.com", "a brand new password")
    rows = outbox(components_of(app))
    assert [r.kind for r in rows] == ["welcome", "password_reset"]  # none for the unknown one
    assert token not in rows[1].body  # once sent, the stored copy loses the link


def test_with_no_smtp_host_nothing_is_queued_and_resets_stay_with_the_admin(
    make_settings: MakeSettings,
) -> None:
    with TestClient(create_app(make_settings())) as api:
        register(api, "offline@example.com")
        reply = api.post("/api/auth/password-reset", json={"email": "offline@example.com"})
        assert reply.json()["message"] == "If the address has an account, a reset has been started."
        components = components_of(api)
        token = components.accounts.request_password_reset(email="offline@example.com", ip="cli")
        assert token and outbox(components) == []
        body = {"token": token, "new_password": "handed over by the office"}
        assert api.post("/api/auth/password-reset/confirm", json=body).status_code == 204


def test_the_admin_sees_each_mail_state_without_its_body(app: TestClient, smtp: SmtpServer) -> None:
    register(app, "reader@example.com")
    app.post("/api/auth/password-reset", json={"email": "reader@example.com"})
    smtp.inbox.wait_for(2)
    components_of(app).accounts.create_admin("boss@example.com", PASSWORD)
    admin = sign_in(app, "boss@example.com")
    listed = app.get("/api/admin/mail", headers=admin)
    assert listed.status_code == 200
    rows = listed.json()
    assert {(r["kind"], r["status"], r["attempts"]) for r in rows} == {
        ("welcome", "sent", 1),
        ("password_reset", "sent", 1),
    }
    assert all("body" not in r for r in rows) and "token=" not in listed.text
    assert app.get("/api/admin/mail?status=failed", headers=admin).json() == []
    user = sign_in(app, "reader@example.com")
    forbidden = app.get("/api/admin/mail", headers=user)
    assert forbidden.status_code == 403 and forbidden.json()["error"]["code"]
    assert app.get("/api/admin/mail?status=lost", headers=admin).status_code == 422


def test_reset_mails_per_address_are_limited_alike_for_known_and_unknown_addresses(
    app: TestClient, smtp: SmtpServer
) -> None:
    register(app, "popular@example.com")
    for email in ("popular@example.com", "ghost@example.com"):
        codes = [
            app.post("/api/auth/password-reset", json={"email": email}).status_code
            for _ in range(6)
        ]
        assert codes == [202] * 5 + [429]
    kinds = [row.kind for row in outbox(components_of(app))]
    assert kinds.count("password_reset") == 5


def test_mail_settings_need_a_sender_and_a_lease_longer_than_a_send() -> None:
    with pytest.raises(ValidationError, match="SMTP_FROM"):
        Settings(_env_file=None, smtp_host="mail.example")  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="mail_lease_s"):
        Settings(_env_file=None, smtp_timeout_s=30, mail_lease_s=60)  # type: ignore[call-arg]
    risky = Settings(  # type: ignore[call-arg]
        _env_file=None, smtp_host="mail.example", smtp_from=SENDER, smtp_tls="none"
    ).unsafe()
    assert any("unencrypted" in w for w in risky)
    assert any("RODEOAI_PUBLIC_URL" in w for w in risky)  # links would point at loopback


# --- billing -----------------------------------------------------------------------------
def billing_components(settings: Settings) -> tuple[Components, User]:
    """A user who is Stripe customer cus_mail; events below carry no subscription, so
    nothing is re-fetched and the key never reaches a Stripe server."""
    components = Components(settings)
    with write_session(components.engine) as session:
        user = User(email="payer@example.com", display_name="Payer")
        session.add(user)
        session.flush()
        session.add(BillingCustomer(user_id=user.id or 0, customer_id="cus_mail"))
    return components, user


def invoice(invoice_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": invoice_id,
        "object": "invoice",
        "customer": "cus_mail",
        "currency": "usd",
        "amount_paid": 1500,
        "amount_due": 1500,
        "attempt_count": 1,
        **fields,
    }


def deliver(components: Components) -> int:
    sender = MailSender(lambda: components.mail, SmtpTransport.from_settings(components.settings))
    return sender.run_once()


def test_a_webhook_delivered_twice_sends_one_receipt(
    smtp: SmtpServer, mail_settings: MailSettings
) -> None:
    settings = mail_settings(smtp, stripe_api_key="sk_test_x", stripe_api_base="http://127.0.0.1:9")
    components, _ = billing_components(settings)
    payments = components.payments
    paid = invoice("in_paid", number="RODEO-0001")
    assert payments.process("evt_paid", "invoice.paid", paid) == "processed"
    assert payments.process("evt_paid", "invoice.paid", paid) == "duplicate"
    # Stripe's second event about the same invoice, then a stale failure that lost the race.
    assert payments.process("evt_succeeded", "invoice.payment_succeeded", paid) == "processed"
    assert payments.process("evt_late", "invoice.payment_failed", paid) == "processed"
    failing = invoice("in_failing", attempt_count=2, amount_paid=0)
    payments.process("evt_fail", "invoice.payment_failed", failing)
    payments.process("evt_fail_again", "invoice.payment_failed", failing)  # same attempt
    assert [r.dedupe_key for r in outbox(components)] == [
        "receipt:invoice:in_paid",
        "payment_failed:invoice:in_failing:2",
    ]
    assert deliver(components) == 2 and deliver(components) == 0
    receipt, failure = smtp.inbox.messages
    assert receipt["To"] == "payer@example.com"
    assert receipt["Subject"] == "Your RodeoAI receipt: 15.00 USD"
    assert "RODEO-0001" in receipt.get_content()
    assert failure["Subject"] == "Your RodeoAI payment did not go through"
    assert f"{PUBLIC_URL}/billing" in failure.get_content()


def test_subscription_changes_are_announced_once_each(
    smtp: SmtpServer, mail_settings: MailSettings, localstripe: str
) -> None:
    client = stripe.StripeClient("sk_test_rodeoai", base_addresses={"api": localstripe})
    product = client.v1.products.create(params={"name": "Pro", "type": "service"})
    plan = client.v1.plans.create(
        params={"product": product["id"], "amount": 1500, "currency": "usd", "interval": "month"}
    )
    settings = mail_settings(
        smtp,
        stripe_api_key="sk_test_rodeoai",
        stripe_api_base=localstripe,
        stripe_pro_plan_id=plan["id"],
    )
    components = Components(settings)
    components.accounts.create_admin("pro@example.com", PASSWORD)  # an account, no welcome
    user = components.accounts.find_by_email("pro@example.com")
    card = client.v1.payment_methods.create(
        params={
            "type": "card",
            "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123"},
        }
    )
    payments = components.payments
    sub = payments.subscribe(user, payment_method=card["id"])["subscription"]
    for event_id in ("evt_c1", "evt_c1", "evt_c2"):  # twice, and a second event saying so
        payments.process(event_id, "customer.subscription.created", {"id": sub})
    payments.cancel(user, at_period_end=True)
    payments.process("evt_u1", "customer.subscription.updated", {"id": sub})  # old news
    payments.resume(user)
    client.v1.subscriptions.cancel(sub)
    payments.process("evt_d1", "customer.subscription.deleted", {"id": sub})
    payments.process("evt_u2", "customer.subscription.updated", {"id": sub})  # late, stale
    assert deliver(components) == 4
    assert [m["Subject"] for m in smtp.inbox.messages] == [
        "Your RodeoAI Pro subscription is active",
        "Your RodeoAI Pro subscription will end",
        "Your RodeoAI Pro subscription continues",
        "Your RodeoAI Pro subscription has ended",
    ]
    assert {m["To"] for m in smtp.inbox.messages} == {"pro@example.com"}
