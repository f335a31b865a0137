"""Plans, quotas, the credit ledger, and Stripe: customers, subscriptions, credit packs,
refunds and webhooks.

Rules this module keeps: orders are fulfilled from webhooks only; each event's effect and its
dedupe row commit in one transaction; objects are re-fetched from Stripe rather than trusting
event order; every outgoing POST carries a deterministic idempotency key; quota debits run in
one BEGIN IMMEDIATE transaction, so concurrent questions cannot overspend.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, func
from sqlmodel import Session, col, select

from server.config import Settings
from server.db import (
    BillingOrder,
    BillingSubscription,
    LedgerEntry,
    Usage,
    User,
    read_session,
    write_session,
)
from server.errors import AppError, InvalidInput, NotFound

log = logging.getLogger(__name__)
ACTIVE = {"active", "trialing", "past_due"}


class BillingDisabled(AppError):
    status = 503
    code = "billing_disabled"


class QuotaExceeded(AppError):
    status = 402
    code = "quota_exceeded"


class BadSignature(AppError):
    status = 400
    code = "bad_signature"


@dataclass
class Plan:
    name: str
    title: str
    kind: str  # free, subscription or credits
    daily_messages: int | None  # None: unlimited
    tier: str  # local: local models only; premium: any configured backend
    price_cents: int = 0
    credits: int = 0


@dataclass(frozen=True)
class Debit:
    """What one question took, so a question that was never answered can be given back."""

    plan: Plan
    usage_id: int
    paid_with: str  # quota or credit
    user_id: int | None


def plans(settings: Settings) -> dict[str, Plan]:
    def daily(n: int) -> int | None:
        return None if n < 0 else n  # -1 means unlimited; 0 means no free questions

    return {
        "free": Plan("free", "Free", "free", daily(settings.free_daily_messages), "local"),
        "pro": Plan(
            "pro",
            "Pro (monthly)",
            "subscription",
            daily(settings.pro_daily_messages),
            "premium",
            settings.pro_price_cents,
        ),
        "credits": Plan(
            "credits",
            f"{settings.credit_pack_credits} question credits",
            "credits",
            None,
            "local",
            settings.credit_pack_price_cents,
            settings.credit_pack_credits,
        ),
    }


def verify_signature(
    payload: bytes, header: str | None, secret: str, *, tolerance: int, now: float | None = None
) -> None:
    """Stripe's scheme (HMAC-SHA256 of "t.payload"), with the timestamp checked both ways."""
    if not header:
        raise BadSignature("missing Stripe-Signature header")
    parts = [p.split("=", 1) for p in header.split(",") if "=" in p]
    stamps = [v for k, v in parts if k == "t"]
    signatures = [v for k, v in parts if k == "v1"]
    if len(stamps) != 1 or not stamps[0].isdigit() or not signatures:
        raise BadSignature("malformed Stripe-Signature header")
    stamp = int(stamps[0])
    if abs((now if now is not None else time.time()) - stamp) > tolerance:
        raise BadSignature("webhook timestamp outside the tolerance")
    expected = hmac.new(secret.encode(), f"{stamp}.".encode() + payload, hashlib.sha256)
    if not any(hmac.compare_digest(expected.hexdigest(), s) for s in signatures):
        raise BadSignature("signature does not match")


def today() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


class BillingService:
    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        self.plans = plans(settings)
        self._client: Any = None

    @property
    def enabled(self) -> bool:
        return self.settings.stripe_api_key is not None

    @property
    def stripe(self) -> Any:
        if not self.enabled:
            raise BillingDisabled(
                "billing is off on this box (no Stripe key); ask an "
                "administrator to grant a plan or credits"
            )
        if self._client is None:
            import stripe

            assert self.settings.stripe_api_key is not None
            base = {"api": self.settings.stripe_api_base} if self.settings.stripe_api_base else None
            self._client = stripe.StripeClient(
                self.settings.stripe_api_key.get_secret_value(),
                base_addresses=base,  # type: ignore[arg-type]
                max_network_retries=2,
            )
        return self._client

    # --- entitlements -----------------------------------------------------------------
    def plan_of(self, user: User | None) -> Plan:
        default = self.plans[self.settings.default_plan]
        if user is None:
            # Guests get local models only, unless billing is off and the box's default plan
            # (an arena's choice) includes more.
            tier = default.tier if not self.enabled else "local"
            guest = self.settings.guest_daily_messages
            return Plan("guest", "Guest", "free", None if guest < 0 else guest, tier)
        return self.plans["pro"] if user.plan == "pro" else default

    def status(self, user: User) -> dict[str, Any]:
        plan = self.plan_of(user)
        with read_session(self.engine) as session:
            used = self._used_today(session, f"user:{user.id}")
            fresh = session.get(User, user.id)
            subscription = session.exec(
                select(BillingSubscription)
                .where(BillingSubscription.user_id == user.id)
                .order_by(col(BillingSubscription.updated_at).desc())
            ).first()
        left = None if plan.daily_messages is None else max(0, plan.daily_messages - used)
        return {
            "plan": plan.name,
            "tier": plan.tier,
            "daily_messages": plan.daily_messages,
            "used_today": used,
            "quota_left_today": left,
            "credits": fresh.credits if fresh else 0,
            "billing_enabled": self.enabled,
            "renews_at": subscription.current_period_end if subscription else None,
            "cancel_at_period_end": bool(subscription and subscription.cancel_at_period_end),
            "subscription_status": subscription.status if subscription else None,
        }

    def _used_today(self, session: Session, subject: str) -> int:
        return int(
            session.exec(
                select(func.count())
                .select_from(Usage)
                .where(Usage.subject == subject, Usage.day == today(), Usage.paid_with == "quota")
            ).one()
        )

    def debit_message(self, user_id: int | None, guest_key: str | None = None) -> Debit:
        """Take one question from today's quota, else one credit, atomically, and return the
        plan it ran under; raise 402 naming the plan when neither is left."""
        subject = f"user:{user_id}" if user_id is not None else f"guest:{guest_key}"
        with write_session(self.engine) as session:  # BEGIN IMMEDIATE: one debit at a time
            user = session.get(User, user_id) if user_id is not None else None
            plan = self.plan_of(user)
            used = self._used_today(session, subject)
            if plan.daily_messages is None or used < plan.daily_messages:
                paid_with = "quota"
            elif user is not None and user.credits > 0:
                paid_with = "credit"
                user.credits -= 1
                session.add(user)
                session.add(LedgerEntry(user_id=user.id or 0, delta=-1, kind="message"))
            else:
                paid_with = ""
            if paid_with:
                usage = Usage(subject=subject, day=today(), paid_with=paid_with)
                session.add(usage)
                session.flush()
                return Debit(plan, usage.id or 0, paid_with, user_id)
        raise QuotaExceeded(
            f"the {plan.title} plan allows {plan.daily_messages} questions a day and they are "
            "used up" + ("; buy credits or upgrade to Pro" if user_id else "; sign in for more"),
            details={"plan": plan.name, "daily_messages": plan.daily_messages},
        )

    def refund_message(self, debit: Debit) -> None:
        """Give back a debit whose question got no answer (busy, every backend down, no
        index): the usage row goes, and a credit returns through the ledger, in one
        transaction. Idempotent: a second call finds no usage row and does nothing."""
        with write_session(self.engine) as session:
            usage = session.get(Usage, debit.usage_id)
            if usage is None:
                return
            session.delete(usage)
            if debit.paid_with == "credit" and debit.user_id is not None:
                user = session.get(User, debit.user_id)
                if user is not None:
                    user.credits += 1
                    session.add(user)
                    session.add(
                        LedgerEntry(
                            user_id=debit.user_id, delta=1, kind="message", note="not answered"
                        )
                    )

    def grant(
        self,
        user_id: int,
        *,
        credits: int = 0,
        plan: str | None = None,
        reference: str | None = None,
        note: str = "",
    ) -> None:
        with write_session(self.engine) as session:
            self._grant(
                session, user_id, credits=credits, plan=plan, reference=reference, note=note
            )

    def _grant(
        self,
        session: Session,
        user_id: int,
        *,
        credits: int,
        plan: str | None,
        reference: str | None,
        note: str,
    ) -> bool:
        if (
            reference
            and session.exec(select(LedgerEntry).where(LedgerEntry.reference == reference)).first()
        ):
            return False  # already applied
        user = session.get(User, user_id)
        if user is None:
            raise NotFound("no such user")
        if plan is not None:
            if plan not in ("free", "pro"):
                raise InvalidInput("plan must be free or pro", code="invalid_plan")
            user.plan = plan
        if credits:
            credits = max(credits, -user.credits)  # never below zero: take back unused only
            user.credits += credits
        session.add(user)
        session.add(
            LedgerEntry(
                user_id=user_id,
                delta=credits,
                kind="grant" if not reference else reference.split(":")[0],
                reference=reference,
                note=note,
            )
        )
        return True

    def history(self, user: User) -> list[dict[str, Any]]:
        with read_session(self.engine) as session:
            entries = session.exec(
                select(LedgerEntry)
                .where(LedgerEntry.user_id == user.id, LedgerEntry.kind != "message")
                .order_by(col(LedgerEntry.id).desc())
                .limit(200)
            ).all()
            orders = session.exec(
                select(BillingOrder)
                .where(BillingOrder.user_id == user.id)
                .order_by(col(BillingOrder.id).desc())
                .limit(200)
            ).all()
        return [
            *(
                {
                    "type": "order",
                    "id": o.id,
                    "status": o.status,
                    "credits": o.credits,
                    "amount_cents": o.amount_cents,
                    "refunded_cents": o.refunded_cents,
                    "currency": o.currency,
                    "created_at": o.created_at,
                }
                for o in orders
            ),
            *(
                {
                    "type": "ledger",
                    "id": e.id,
                    "kind": e.kind,
                    "delta": e.delta,
                    "note": e.note,
                    "created_at": e.created_at,
                }
                for e in entries
            ),
        ]
