"""Plans, subscriptions, credit packs, billing status and history, refunds, and the webhook."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request

from server.api.deps import AdminUser, ComponentsDep, CurrentUser
from server.schemas import ErrorOut, PaymentIn, RefundIn, error_responses

router = APIRouter(
    tags=["billing"],
    responses={
        **error_responses(402, 409),
        503: {"model": ErrorOut, "description": "Billing is off"},
    },
)


@router.get("/api/billing/plans")
def list_plans(components: ComponentsDep) -> dict[str, Any]:
    """The plans on offer, and whether this box takes payments."""
    billing = components.billing
    return {
        "billing_enabled": billing.enabled,
        "currency": components.settings.currency,
        "default_plan": components.settings.default_plan,
        "plans": [vars(p) for p in billing.plans.values()],
    }


@router.get("/api/billing/status")
def billing_status(user: CurrentUser, components: ComponentsDep) -> dict[str, Any]:
    """Plan, questions left today, credits, and renewal."""
    return components.billing.status(user)


@router.get("/api/billing/history")
async def billing_history(user: CurrentUser, components: ComponentsDep) -> list[dict[str, Any]]:
    """Orders and credit movements from our own ledger, newest first, then Stripe's
    invoices for subscription payments where Stripe has them."""
    ours = await asyncio.to_thread(components.billing.history, user)
    return ours + await asyncio.to_thread(components.payments.invoices, user)


@router.post("/api/billing/subscribe")
async def subscribe(body: PaymentIn, user: CurrentUser, components: ComponentsDep) -> Any:
    """Start Pro. The plan changes when Stripe's webhook confirms payment."""
    return await asyncio.to_thread(
        components.payments.subscribe, user, payment_method=body.payment_method
    )


@router.post("/api/billing/cancel")
async def cancel(user: CurrentUser, components: ComponentsDep) -> Any:
    """Cancel Pro at the end of the paid period."""
    return await asyncio.to_thread(components.payments.cancel, user)


@router.post("/api/billing/resume")
async def resume(user: CurrentUser, components: ComponentsDep) -> Any:
    """Keep Pro after all: undo a cancellation before the period ends."""
    return await asyncio.to_thread(components.payments.resume, user)


@router.post("/api/billing/purchase")
async def purchase(body: PaymentIn, user: CurrentUser, components: ComponentsDep) -> Any:
    """Buy a credit pack: returns a PaymentIntent client secret for the payment page. Credits
    arrive when Stripe's webhook confirms payment."""
    return await asyncio.to_thread(
        components.payments.purchase, user, payment_method=body.payment_method
    )


@router.post("/api/admin/refunds", tags=["admin"])
async def refund(body: RefundIn, _admin: AdminUser, components: ComponentsDep) -> Any:
    """Refund an order in full or in part; the unused credits it bought are taken back."""
    return await asyncio.to_thread(
        components.payments.refund, body.order_id, amount_cents=body.amount_cents
    )


@router.post("/api/billing/webhook", include_in_schema=False)
async def webhook(request: Request, components: ComponentsDep) -> dict[str, str]:
    """Stripe events, verified on the raw body and applied once each."""
    components.billing.stripe  # noqa: B018  (503 when billing is off)
    payload = await request.body()
    outcome = await asyncio.to_thread(
        components.payments.receive, payload, request.headers.get("stripe-signature")
    )
    return {"status": outcome}
