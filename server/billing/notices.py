"""Billing mail: receipts, failed payments and subscription changes, queued in the same
transaction as the webhook's effect, so a redelivered event (already deduplicated by id)
queues nothing, and each mail's dedupe key names the Stripe object it is about.

Events can come twice or out of order. A receipt is keyed on the invoice or PaymentIntent,
so `invoice.paid` and `invoice.payment_succeeded` for one invoice make one receipt. A failed
payment notice that arrives after that invoice's receipt is dropped as stale. Subscription
mail follows our stored copy's change (old state to Stripe's current one), not the event
type, so replays and shuffled events announce each change once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import Session, select

from server.billing.plans import ACTIVE
from server.db import MailOutbox, User
from server.notify import Mail, Outbox, messages

STARTED = {"active", "trialing"}


def _get(obj: Any, key: str, default: Any = None) -> Any:
    try:
        return obj[key] if obj is not None and key in obj else default
    except (KeyError, TypeError):
        return default


def subscription_change(old: tuple[str, bool] | None, new: tuple[str, bool]) -> str | None:
    """The notice a change of (status, cancel_at_period_end) deserves, if any."""
    status, ending = new
    was, was_ending = old if old else ("", False)
    if status in STARTED and was not in STARTED:
        return "started"
    if was in ACTIVE and status not in ACTIVE:
        return "ended"
    if status == "past_due" and was != "past_due":
        return "past_due"
    if status in STARTED and ending != was_ending:
        return "ending" if ending else "resumed"
    return None


class BillingMail:
    def __init__(self, mail: Outbox | None) -> None:
        self.mail = mail

    def _queue(self, s: Session, user_id: int | None, mail: Mail, key: str) -> None:
        if self.mail is None or not self.mail.enabled:
            return
        user = s.get(User, user_id) if user_id is not None else None
        if user is not None and not user.disabled:
            self.mail.enqueue(s, mail, key=key, to=user.email)

    @property
    def _base(self) -> str:
        return self.mail.config.public_url if self.mail else ""

    def credit_pack_paid(
        self, s: Session, *, user_id: int, intent_id: str, credits: int, amount: int, currency: str
    ) -> None:
        mail = messages.receipt(
            what=f"a pack of {credits} credits",
            amount=amount,
            currency=currency,
            reference=intent_id,
            base_url=self._base,
        )
        self._queue(s, user_id, mail, f"receipt:payment_intent:{intent_id}")

    def invoice_event(self, s: Session, kind: str, invoice: Any, user_id: int | None) -> None:
        """A receipt for a paid invoice, a notice for a failed one; the signed event's own
        invoice (its amounts are final once paid or failed)."""
        invoice_id = str(_get(invoice, "id") or "")
        if not invoice_id or user_id is None:
            return
        reference = str(_get(invoice, "number") or invoice_id)
        currency = str(_get(invoice, "currency") or "usd")
        if kind in {"invoice.paid", "invoice.payment_succeeded"}:
            amount = int(_get(invoice, "amount_paid") or 0)
            if amount > 0:  # a free trial's invoice is no payment
                mail = messages.receipt(
                    what="RodeoAI Pro",
                    amount=amount,
                    currency=currency,
                    reference=reference,
                    base_url=self._base,
                )
                self._queue(s, user_id, mail, f"receipt:invoice:{invoice_id}")
        elif kind == "invoice.payment_failed" and not self._queued(s, invoice_id):
            attempt = _get(invoice, "attempt_count") or 0
            mail = messages.payment_failed(
                amount=int(_get(invoice, "amount_due") or 0),
                currency=currency,
                reference=reference,
                base_url=self._base,
            )
            self._queue(s, user_id, mail, f"payment_failed:invoice:{invoice_id}:{attempt}")

    @staticmethod
    def _queued(s: Session, invoice_id: str) -> bool:
        """Whether this invoice's receipt is queued: it was paid, so a failure is stale."""
        key = f"receipt:invoice:{invoice_id}"
        return s.exec(select(MailOutbox.id).where(MailOutbox.dedupe_key == key)).first() is not None

    def subscription_changed(
        self,
        s: Session,
        *,
        user_id: int,
        subscription_id: str,
        old: tuple[str, bool] | None,
        new: tuple[str, bool],
        version: int,
        period_end: datetime | None,
    ) -> None:
        """`version` is our copy's last change before this one, so the same transition from
        the same state has one key, however many events announce it."""
        change = subscription_change(old, new)
        if change is None:
            return
        mail = messages.subscription(change=change, period_end=period_end, base_url=self._base)
        self._queue(s, user_id, mail, f"subscription:{subscription_id}:{version}:{change}")
