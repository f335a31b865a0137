"""Stripe end to end: localstripe sends its signed webhooks to a real `rodeoai serve`
process. Pay for credits, subscribe, cancel, refund; and a SIGKILL mid-webhook."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import stripe

from tests.billing.test_billing import PASSWORD, SECRET, event, sign
from tests.conftest import run_cli
from tests.servers import SERVER_PIDS, copy_data, rodeoai_server

CARD = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123"}
ASK = {"messages": [{"role": "user", "content": "What is a hazer?"}]}


def stripe_env(localstripe: str, **extra: str) -> dict[str, str]:
    return {
        "stripe_api_key": "sk_test_rodeoai",
        "stripe_api_base": localstripe,
        "stripe_webhook_secret": SECRET,
        "backends": "extractive",
        **extra,
    }


def wait_for(check: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


class Customer:
    def __init__(self, server: str, email: str) -> None:
        self.http = httpx.Client(base_url=server, timeout=60)
        self.http.post("/api/auth/register", json={"email": email, "password": PASSWORD})
        token = self.http.post(
            "/api/auth/login", json={"email": email, "password": PASSWORD}
        ).json()
        self.http.headers["Authorization"] = f"Bearer {token['access_token']}"

    def status(self) -> dict[str, Any]:
        return dict(self.http.get("/api/billing/status").json())

    def chat(self) -> int:
        return self.http.post("/api/chat", json=ASK).status_code


@pytest.fixture
def stripe_api(localstripe: str) -> Any:
    return stripe.StripeClient("sk_test_rodeoai", base_addresses={"api": localstripe})


@pytest.fixture
def server(localstripe: str, shared_data: Path, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    data = copy_data(shared_data, tmp_path / "data")
    synced = run_cli(
        "billing",
        "sync",
        data_dir=data,
        extra_env={f"RODEOAI_{k.upper()}": v for k, v in stripe_env(localstripe).items()},
    )
    assert synced.returncode == 0, synced.stderr
    plan_id = synced.stdout.strip().split("=", 1)[1]
    with rodeoai_server(
        data, **stripe_env(localstripe, stripe_pro_plan_id=plan_id, free_daily_messages="1")
    ) as url:
        registered = httpx.post(
            f"{localstripe}/_config/webhooks/rodeoai",
            json={"url": f"{url}/api/billing/webhook", "secret": SECRET},
        )
        assert registered.status_code == 200
        yield url, data


def test_pay_subscribe_cancel_and_refund_through_stripe_webhooks(
    server: tuple[str, Path], stripe_api: Any
) -> None:
    url, data = server
    rider = Customer(url, "rider@example.com")
    assert rider.chat() == 200  # the free question of the day
    assert rider.chat() == 402

    card = stripe_api.v1.payment_methods.create(params={"type": "card", "card": CARD})
    order = rider.http.post("/api/billing/purchase", json={"payment_method": card["id"]}).json()
    stripe_api.v1.payment_intents.confirm(order["payment_intent"])  # the page's job
    wait_for(lambda: rider.status()["credits"] == 100, "the credit-pack webhook")
    assert rider.chat() == 200
    assert rider.status()["credits"] == 99

    card2 = stripe_api.v1.payment_methods.create(params={"type": "card", "card": CARD})
    subscribed = rider.http.post("/api/billing/subscribe", json={"payment_method": card2["id"]})
    assert subscribed.status_code == 200, subscribed.text
    wait_for(lambda: rider.status()["plan"] == "pro", "the subscription webhook")
    assert all(rider.chat() == 200 for _ in range(3))  # Pro: no daily cap, credits untouched
    assert rider.status()["credits"] == 99

    cancelled = rider.http.post("/api/billing/cancel").json()
    assert cancelled["cancel_at_period_end"] is True
    assert rider.status()["cancel_at_period_end"] is True
    resumed = rider.http.post("/api/billing/resume")
    assert resumed.status_code == 200 and rider.status()["cancel_at_period_end"] is False
    assert rider.http.post("/api/billing/cancel").json()["cancel_at_period_end"] is True
    assert rider.status()["plan"] == "pro"  # paid to the end of the period
    invoices = [h for h in rider.http.get("/api/billing/history").json() if h["type"] == "invoice"]
    assert invoices and invoices[0]["id"].startswith("in_")
    stripe_api.v1.subscriptions.cancel(subscribed.json()["subscription"])  # period ends
    wait_for(lambda: rider.status()["plan"] == "free", "the cancellation webhook")

    made = run_cli(
        "users",
        "create-admin",
        "boss@example.com",
        "--password-stdin",
        data_dir=data,
        extra_env={"RODEOAI_STRIPE_API_KEY": "sk_test_rodeoai"},
        input_text=PASSWORD + "\n",
    )
    assert made.returncode == 0, made.stderr
    admin = Customer(url, "boss@example.com")
    half = admin.http.post(
        "/api/admin/refunds", json={"order_id": order["order_id"], "amount_cents": 250}
    )
    assert half.status_code == 200, half.text
    assert rider.status()["credits"] == 49  # half the pack's 100 credits taken back
    rest = admin.http.post("/api/admin/refunds", json={"order_id": order["order_id"]})
    assert rest.status_code == 200
    assert rider.status()["credits"] == 0  # only unused credits can be taken back
    denied = rider.http.post("/api/admin/refunds", json={"order_id": order["order_id"]})
    assert denied.status_code == 403


def test_sigkill_during_webhook_handling_then_redelivery_grants_once(
    localstripe: str, tmp_path: Path, stripe_api: Any
) -> None:
    data = tmp_path / "data"
    expected = 0
    for attempt, delay in enumerate((0.0, 0.03)):  # killed at once, and part-way
        with rodeoai_server(data, **stripe_env(localstripe)) as url:
            rider = Customer(url, "killed@example.com")
            card = stripe_api.v1.payment_methods.create(params={"type": "card", "card": CARD})
            order = rider.http.post(
                "/api/billing/purchase", json={"payment_method": card["id"]}
            ).json()
            stripe_api.v1.payment_intents.confirm(order["payment_intent"])
            body = event(
                f"evt_kill_{attempt}", "payment_intent.succeeded", {"id": order["payment_intent"]}
            )
            pid = SERVER_PIDS[url]

            def deliver(target: str = url, payload: bytes = body) -> None:
                # The server may die under the request: Stripe would simply retry.
                with contextlib.suppress(httpx.HTTPError):
                    httpx.post(
                        f"{target}/api/billing/webhook",
                        content=payload,
                        timeout=10,
                        headers={"Stripe-Signature": sign(payload)},
                    )

            sender = threading.Thread(target=deliver)
            sender.start()
            time.sleep(delay)
            os.kill(pid, signal.SIGKILL)
            sender.join()
        expected += 100
        with rodeoai_server(data, **stripe_env(localstripe)) as url:
            rider = Customer(url, "killed@example.com")
            retry = httpx.post(
                f"{url}/api/billing/webhook", content=body, headers={"Stripe-Signature": sign(body)}
            )
            assert retry.status_code == 200
            assert retry.json()["status"] in {"processed", "duplicate"}
            assert rider.status()["credits"] == expected
