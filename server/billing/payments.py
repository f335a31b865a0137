"""Stripe: customers, subscriptions, credit-pack PaymentIntents, refunds, webhooks, reconcile.

Nothing here grants anything on the strength of an API reply: state changes come from
webhooks (or the reconcile replay), after re-fetching the object from Stripe.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar

from sqlmodel import Session, col, select

from server.billing.notices import BillingMail
from server.billing.plans import ACTIVE, BillingService, verify_signature
from server.db import (
    BillingCustomer,
    BillingOrder,
    BillingSubscription,
    StripeEvent,
    User,
    read_session,
    utcnow,
    write_session,
)
from server.errors import AppError, InvalidInput, NotFound
from server.notify import Outbox

log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")
HANDLED = {
    "payment_intent.succeeded",
    "payment_intent.payment_failed",
    "invoice.paid",
    "invoice.payment_succeeded",
    "invoice.payment_failed",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "charge.refunded",
}


def _get(obj: Any, key: str, default: Any = None) -> Any:
    try:
        return obj[key] if obj is not None and key in obj else default
    except (KeyError, TypeError):
        return default


def _active_subscription(session: Session, user_id: int | None) -> BillingSubscription | None:
    return session.exec(
        select(BillingSubscription).where(
            BillingSubscription.user_id == user_id, col(BillingSubscription.status).in_(ACTIVE)
        )
    ).first()


def _version(row: BillingSubscription) -> int:
    """Keys derive from our last-seen state: a retried request repeats its key, while the
    next change (cancel, resume, cancel again) gets a new one."""
    return int(row.updated_at.timestamp() * 1000)


def stripe_error(exc: Exception) -> AppError:
    """Stripe's refusal or outage as one of our errors: a declined card or a bad payment
    method is the client's to fix; a bad key or an outage is the operator's or Stripe's."""
    import stripe

    message = getattr(exc, "user_message", None) or str(exc) or type(exc).__name__
    if isinstance(exc, stripe.CardError):
        return AppError(f"payment declined: {message}", code="payment_declined", status=402)
    if isinstance(exc, stripe.InvalidRequestError):
        return InvalidInput(f"Stripe refused the request: {message}", code="payment_rejected")
    if isinstance(exc, stripe.AuthenticationError | stripe.PermissionError):
        return AppError(
            "Stripe refused this box's API key; an administrator must fix RODEOAI_STRIPE_API_KEY",
            code="billing_misconfigured",
            status=503,
        )
    return AppError(
        "the payment provider is unreachable or failing; try again shortly",
        code="payment_provider_error",
        status=502,
        headers={"Retry-After": "30"},
    )


def stripe_call(method: Callable[P, R]) -> Callable[P, R]:
    """Translate any Stripe error a method meets, so no client ever gets a 500 for it."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        import stripe

        try:
            return method(*args, **kwargs)
        except stripe.StripeError as exc:
            log.warning("Stripe error in %s: %s", method.__name__, exc)
            raise stripe_error(exc) from exc

    return wrapper


class Payments:
    def __init__(self, billing: BillingService, mail: Outbox | None = None) -> None:
        self.billing = billing
        self.engine = billing.engine
        self.settings = billing.settings
        self.notices = BillingMail(mail)  # mail queued in each effect's own transaction

    def _post(
        self, resource: str, action: str, params: dict[str, Any], key: str, *args: Any
    ) -> Any:
        """Every POST carries a deterministic idempotency key, so a retry cannot repeat it."""
        service = getattr(self.billing.stripe.v1, resource)
        return getattr(service, action)(
            *args, params=params, options={"idempotency_key": f"rodeoai-{key}"}
        )

    # --- customers --------------------------------------------------------------------
    def customer_for(self, user: User) -> str:
        with read_session(self.engine) as session:
            row = session.get(BillingCustomer, user.id)
        if row:
            return row.customer_id
        customer = self._post(
            "customers",
            "create",
            {"email": user.email, "metadata": {"user_id": str(user.id)}},
            f"customer-{user.id}",
        )
        with write_session(self.engine) as session:
            if session.get(BillingCustomer, user.id) is None:
                session.add(BillingCustomer(user_id=user.id or 0, customer_id=customer["id"]))
        return str(customer["id"])

    def _user_for_customer(self, session: Session, customer_id: str | None) -> int | None:
        row = session.exec(
            select(BillingCustomer).where(BillingCustomer.customer_id == customer_id)
        ).first()
        return row.user_id if row else None

    # --- credit packs -----------------------------------------------------------------
    @stripe_call
    def purchase(self, user: User, *, payment_method: str | None = None) -> dict[str, Any]:
        self.billing.stripe  # noqa: B018  (503 billing_disabled when off)
        pack = self.billing.plans["credits"]
        customer = self.customer_for(user)
        with write_session(self.engine) as session:
            order = BillingOrder(
                user_id=user.id or 0,
                credits=pack.credits,
                amount_cents=pack.price_cents,
                currency=self.settings.currency,
            )
            session.add(order)
            session.flush()
            order_id = order.id
        params: dict[str, Any] = {
            "amount": pack.price_cents,
            "currency": self.settings.currency,
            "customer": customer,
            "metadata": {"order_id": str(order_id), "user_id": str(user.id)},
        }
        if payment_method:
            params["payment_method"] = payment_method
        try:
            intent = self._post("payment_intents", "create", params, f"order-{order_id}")
        except Exception:
            self._mark_failed(order_id)  # the order never reached Stripe: not left pending
            raise
        with write_session(self.engine) as session:
            row = session.get(BillingOrder, order_id)
            assert row is not None
            row.payment_intent_id = intent["id"]
            session.add(row)
        return {
            "order_id": order_id,
            "payment_intent": intent["id"],
            "client_secret": intent["client_secret"],
            "amount_cents": pack.price_cents,
            "credits": pack.credits,
            "currency": self.settings.currency,
        }

    def _mark_failed(self, order_id: int | None) -> None:
        with write_session(self.engine) as session:
            row = session.get(BillingOrder, order_id)
            if row is not None and row.status == "pending":
                row.status = "failed"
                session.add(row)

    # --- subscriptions ----------------------------------------------------------------
    @stripe_call
    def subscribe(self, user: User, *, payment_method: str | None = None) -> dict[str, Any]:
        self.billing.stripe  # noqa: B018  (503 billing_disabled when off)
        plan_id = self.settings.stripe_pro_plan_id
        if not plan_id:
            raise AppError(
                "no Stripe plan is set up for Pro; run `rodeoai billing sync`",
                code="plan_not_configured",
                status=503,
            )
        customer = self.customer_for(user)
        if payment_method:
            self._post(
                "payment_methods",
                "attach",
                {"customer": customer},
                f"attach-{payment_method}-{customer}",
                payment_method,
            )
            self._post(
                "customers",
                "update",
                {"invoice_settings": {"default_payment_method": payment_method}},
                f"default-pm-{customer}-{payment_method}",
                customer,
            )
        with read_session(self.engine) as session:
            count = len(
                session.exec(
                    select(BillingSubscription).where(BillingSubscription.user_id == user.id)
                ).all()
            )
        subscription = self._post(
            "subscriptions",
            "create",
            {
                "customer": customer,
                "items": [{"plan": plan_id}],
                "metadata": {"user_id": str(user.id), "plan": "pro"},
            },
            f"subscribe-{user.id}-{count}",
        )
        return {"subscription": subscription["id"], "status": subscription["status"]}

    @stripe_call
    def cancel(self, user: User, *, at_period_end: bool = True) -> dict[str, Any]:
        self.billing.stripe  # noqa: B018  (503 billing_disabled when off)
        with read_session(self.engine) as session:
            current = _active_subscription(session, user.id)
        if current is None:
            raise NotFound("no active subscription")
        if at_period_end:
            result = self._post(
                "subscriptions",
                "update",
                {"cancel_at_period_end": True},
                f"cancel-{current.id}-{_version(current)}",
                current.id,
            )
        else:
            result = self.billing.stripe.v1.subscriptions.cancel(current.id)
        with write_session(self.engine) as session:  # Stripe's new state; no grant involved
            self._sync_subscription(session, result.to_dict())
        return {
            "subscription": current.id,
            "status": result["status"],
            "cancel_at_period_end": bool(_get(result, "cancel_at_period_end")),
        }

    @stripe_call
    def resume(self, user: User) -> dict[str, Any]:
        """Undo a cancellation that has not taken effect yet."""
        self.billing.stripe  # noqa: B018  (503 billing_disabled when off)
        with read_session(self.engine) as session:
            current = _active_subscription(session, user.id)
        if current is None or not current.cancel_at_period_end:
            raise NotFound("no subscription waiting to end")
        result = self._post(
            "subscriptions",
            "update",
            {"cancel_at_period_end": False},
            f"resume-{current.id}-{_version(current)}",
            current.id,
        )
        with write_session(self.engine) as session:
            self._sync_subscription(session, result.to_dict())
        return {
            "subscription": current.id,
            "status": result["status"],
            "cancel_at_period_end": False,
        }

    @stripe_call
    def invoices(self, user: User) -> list[dict[str, Any]]:
        """Stripe's invoices for the user's subscription payments, where there are any."""
        if not self.billing.enabled:
            return []
        with read_session(self.engine) as session:
            customer = session.get(BillingCustomer, user.id)
        if customer is None:
            return []
        listed = self.billing.stripe.v1.invoices.list(params={"customer": customer.customer_id})
        return [
            {
                "type": "invoice",
                "id": i["id"],
                "status": i["status"],
                "amount_cents": i.to_dict().get("amount_paid", i.to_dict().get("total")),
                "currency": i["currency"],
                "created": i["created"],
            }
            for i in listed.data
        ]

    # --- refunds (admin) --------------------------------------------------------------
    @stripe_call
    def refund(self, order_id: int, *, amount_cents: int | None = None) -> dict[str, Any]:
        self.billing.stripe  # noqa: B018  (503 billing_disabled when off)
        with read_session(self.engine) as session:
            order = session.get(BillingOrder, order_id)
        if order is None or order.payment_intent_id is None:
            raise NotFound("no such order")
        if order.status not in {"paid", "refunded"}:
            raise InvalidInput("only paid orders can be refunded", code="not_refundable")
        left = order.amount_cents - order.refunded_cents
        amount = amount_cents or left
        if not 0 < amount <= left:
            raise InvalidInput(f"refund between 1 and {left} cents", code="invalid_amount")
        refund = self._post(
            "refunds",
            "create",
            {"payment_intent": order.payment_intent_id, "amount": amount},
            f"refund-{order_id}-{order.refunded_cents}-{amount}",
        )
        # Stripe confirmed the refund: take back the credits once, keyed by the refund id.
        with write_session(self.engine) as session:
            self._apply_refund(session, order.payment_intent_id, refund["id"], amount)
        return {"refund": refund["id"], "amount_cents": amount, "status": refund["status"]}

    def _apply_refund(self, s: Session, payment_intent: str, refund_id: str, amount: int) -> None:
        """Take back the credits a refund paid for, once per refund id."""
        order = s.exec(
            select(BillingOrder).where(BillingOrder.payment_intent_id == payment_intent)
        ).first()
        if order is None:
            return
        share = -(-order.credits * amount // order.amount_cents)  # round up
        if self.billing._grant(
            s,
            order.user_id,
            credits=-share,
            plan=None,
            reference=f"refund:{refund_id}",
            note="refund",
        ):
            order.refunded_cents = min(order.amount_cents, order.refunded_cents + amount)
            order.status = "refunded"
            order.updated_at = utcnow()
            s.add(order)

    # --- webhooks ---------------------------------------------------------------------
    def receive(self, payload: bytes, signature: str | None) -> str:
        secret = self.settings.stripe_webhook_secret
        if secret is None:
            raise AppError("no webhook secret configured", code="billing_disabled", status=503)
        verify_signature(
            payload,
            signature,
            secret.get_secret_value(),
            tolerance=self.settings.webhook_tolerance_s,
        )
        try:
            event = json.loads(payload)
            event_id, kind = str(event["id"]), str(event["type"])
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidInput("webhook body is not a Stripe event", code="bad_event") from exc
        return self.process(event_id, kind, event.get("data", {}).get("object", {}))

    @stripe_call
    def process(self, event_id: str, kind: str, obj: dict[str, Any]) -> str:
        if kind not in HANDLED:
            return "ignored"
        fresh = self._refetch(kind, obj)  # outside the transaction: it is a network call
        with write_session(self.engine) as session:
            if session.get(StripeEvent, event_id):
                return "duplicate"
            session.add(StripeEvent(id=event_id, type=kind))
            self._apply(session, kind, fresh)
            if kind.startswith("invoice."):  # the event's invoice: `fresh` is its subscription
                user_id = self._user_for_customer(session, _get(obj, "customer"))
                self.notices.invoice_event(session, kind, obj, user_id)
        return "processed"

    def _refetch(self, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
        v1 = self.billing.stripe.v1
        if kind.startswith("payment_intent."):
            return dict(v1.payment_intents.retrieve(obj["id"]).to_dict())
        if kind.startswith("customer.subscription."):
            return dict(v1.subscriptions.retrieve(obj["id"]).to_dict())
        if kind.startswith("invoice.") and _get(obj, "subscription"):
            return dict(v1.subscriptions.retrieve(obj["subscription"]).to_dict())
        return obj  # charge.refunded: the refund amounts travel on the charge itself

    def _apply(self, session: Session, kind: str, obj: dict[str, Any]) -> None:
        if kind.startswith("payment_intent."):
            self._apply_intent(session, obj)
        elif kind.startswith("customer.subscription.") or (
            kind.startswith("invoice.") and _get(obj, "object") != "invoice"
        ):  # an invoice with no subscription has none to sync
            self._sync_subscription(session, obj)
        elif kind == "charge.refunded":
            for refund in _get(_get(obj, "refunds", {}), "data", []) or []:
                self._apply_refund(
                    session, obj.get("payment_intent", ""), refund["id"], int(refund["amount"])
                )

    def _apply_intent(self, session: Session, intent: dict[str, Any]) -> None:
        order = session.exec(
            select(BillingOrder).where(BillingOrder.payment_intent_id == intent["id"])
        ).first()
        if order is None:
            return
        if intent["status"] == "succeeded" and order.status == "pending":
            order.status = "paid"
            self.billing._grant(
                session,
                order.user_id,
                credits=order.credits,
                plan=None,
                reference=f"purchase:{intent['id']}",
                note="credit pack",
            )
            self.notices.credit_pack_paid(
                session,
                user_id=order.user_id,
                intent_id=str(intent["id"]),
                credits=order.credits,
                amount=order.amount_cents,
                currency=order.currency,
            )
        elif intent["status"] in {"requires_payment_method", "canceled"} and (
            order.status == "pending"
        ):
            order.status = "failed"
        order.updated_at = utcnow()
        session.add(order)

    def _sync_subscription(self, s: Session, sub: Any) -> None:
        """Make our copy match Stripe's subscription, then the user's plan match that."""
        user_id = self._user_for_customer(s, _get(sub, "customer"))
        if user_id is None:
            return
        existing = s.get(BillingSubscription, sub["id"])
        row = existing or BillingSubscription(
            id=sub["id"], user_id=user_id, plan="pro", status=sub["status"]
        )
        old = (row.status, row.cancel_at_period_end) if existing else None
        version = _version(row) if existing else 0
        row.status = str(sub["status"])
        row.cancel_at_period_end = bool(_get(sub, "cancel_at_period_end"))
        end = _get(sub, "current_period_end")
        row.current_period_end = datetime.fromtimestamp(end, UTC) if end else None
        row.updated_at = utcnow()
        s.add(row)
        s.flush()
        self.notices.subscription_changed(
            s,
            user_id=row.user_id,
            subscription_id=row.id,
            old=old,
            new=(row.status, row.cancel_at_period_end),
            version=version,
            period_end=row.current_period_end,
        )
        user = s.get(User, user_id)
        if user is not None:
            user.plan = "pro" if _active_subscription(s, user_id) else "free"
            s.add(user)

    @stripe_call
    def reconcile(self, *, limit: int = 100) -> dict[str, int]:
        """Replay recent events from Stripe's list; already-processed ones are skipped."""
        counts = {"processed": 0, "duplicate": 0, "ignored": 0}
        events = self.billing.stripe.v1.events.list(params={"limit": limit})
        for event in reversed(list(events.auto_paging_iter())):
            data = event.to_dict()
            outcome = self.process(data["id"], data["type"], data["data"]["object"])
            counts[outcome] += 1
        return counts

    @stripe_call
    def sync_plans(self) -> str:
        """Create the Pro product and monthly plan in Stripe; prints the plan id to set."""
        product = self._post(
            "products", "create", {"name": "RodeoAI Pro", "type": "service"}, "product-pro"
        )
        plan = self._post(
            "plans",
            "create",
            {
                "product": product["id"],
                "amount": self.settings.pro_price_cents,
                "currency": self.settings.currency,
                "interval": "month",
                "nickname": "pro",
            },
            f"plan-pro-{self.settings.pro_price_cents}-{self.settings.currency}",
        )
        return str(plan["id"])
