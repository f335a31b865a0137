"""Sign-up, sign-in, sign-out, password reset, the profile with API keys, and billing.
Forms post back to the page that shows them; errors re-render it with the message."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import ValidationError

from server.errors import AppError
from server.http import session as cookies
from server.http.csp import STRIPE_CSP
from server.schemas import Event, ProfilePatch
from server.web.context import Page, PageDep

router = APIRouter(include_in_schema=False)
EVENTS: tuple[str, ...] = Event.__args__  # type: ignore[attr-defined]


def _local(target: str | None) -> str:
    """Only a path on this box may follow sign-in: no open redirect."""
    if not target:
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return "/"
    return target


def _signed_in(page: Page, pair: Any, to: str) -> Response:
    response = page.redirect(to)
    cookies.set_session(
        page.request, response, pair, refresh_days=page.components.settings.refresh_token_days
    )
    return response


@router.get("/sign-in")
def sign_in_page(page: PageDep, next: str | None = None) -> Response:
    return page.render("sign_in.html", next=_local(next), error=None, email="")


@router.post("/sign-in")
async def sign_in(page: PageDep) -> Response:
    form = await page.form()
    target = _local(form.get("next"))
    email = form.get("email", "")[:320]
    try:
        pair = await asyncio.to_thread(
            page.components.accounts.login,
            email=email,
            password=form.get("password", "")[:1024],
            ip=page.ip(),
        )
    except AppError as exc:
        return page.render("sign_in.html", exc.status, next=target, error=exc.message, email=email)
    return _signed_in(page, pair, target)


@router.get("/sign-up")
def sign_up_page(page: PageDep) -> Response:
    return page.render("sign_up.html", error=None, email="", display_name="")


@router.post("/sign-up")
async def sign_up(page: PageDep) -> Response:
    form = await page.form()
    email, name = form.get("email", "")[:320], form.get("display_name", "")[:100]
    password = form.get("password", "")[:1024]
    accounts = page.components.accounts
    try:
        await asyncio.to_thread(
            accounts.register, email=email, password=password, display_name=name, ip=page.ip()
        )
        pair = await asyncio.to_thread(accounts.login, email=email, password=password, ip=page.ip())
    except AppError as exc:
        return page.render(
            "sign_up.html", exc.status, error=exc.message, email=email, display_name=name
        )
    return _signed_in(page, pair, "/")


@router.post("/sign-out")
async def sign_out(page: PageDep) -> Response:
    await page.form()
    if page.user is not None:
        page.components.accounts.logout(page.principal)
    response = page.redirect("/")
    cookies.clear_session(response)
    return response


@router.get("/reset-password")
def reset_page(page: PageDep, token: str | None = None) -> Response:
    return page.render("reset.html", token=(token or "")[:200], done=None, error=None)


@router.post("/reset-password")
async def reset_request(page: PageDep) -> Response:
    form = await page.form()
    try:
        await asyncio.to_thread(
            page.components.accounts.request_password_reset,
            email=form.get("email", "")[:320],
            ip=page.ip(),
        )
    except AppError as exc:
        return page.render("reset.html", exc.status, token="", done=None, error=exc.message)
    done = (
        "If the address has an account, we have e-mailed it a reset link (valid one hour)."
        if page.components.accounts.mails
        else "If the address has an account, a reset has been started. This box sends no "
        "e-mail: ask the office for your reset link."
    )
    return page.render("reset.html", token="", done=done, error=None)


@router.post("/reset-password/confirm")
async def reset_confirm(page: PageDep) -> Response:
    form = await page.form()
    token = form.get("token", "")[:200]
    try:
        await asyncio.to_thread(
            page.components.accounts.confirm_password_reset,
            token=token,
            new_password=form.get("new_password", "")[:1024],
        )
    except AppError as exc:
        return page.render("reset.html", exc.status, token=token, done=None, error=exc.message)
    return page.render(
        "sign_in.html", next="/", error=None, email="", notice="Password changed: sign in."
    )


def _profile(page: Page, status: int = 200, **values: Any) -> Response:
    if page.user is None:
        return page.redirect("/sign-in?next=/profile")
    keys = page.components.accounts.list_api_keys(page.user)
    values.setdefault("error", None)
    values.setdefault("notice", None)
    values.setdefault("new_key", None)
    mine = json.loads(page.user.events_json or "[]")
    return page.render("profile.html", status, events=EVENTS, user_events=mine, keys=keys, **values)


# After a successful form the browser is redirected (post, redirect, get), so a reload never
# repeats it; the notice travels as one of these names, never as text from the URL.
NOTICES = {"saved": "Profile saved.", "revoked": "Key revoked.", "created": None}
NEW_KEY_COOKIE = "rodeoai_new_key"


def _done(page: Page, notice: str, *, new_key: str | None = None) -> Response:
    response = page.redirect(f"/profile?done={notice}")
    if new_key:  # shown once, by the next page load, then deleted
        response.set_cookie(
            NEW_KEY_COOKIE,
            new_key,
            max_age=120,
            httponly=True,
            samesite="strict",
            path="/profile",
            secure=page.request.url.scheme == "https",
        )
    return response


@router.get("/profile")
def profile_page(page: PageDep, done: str | None = None) -> Response:
    new_key = page.request.cookies.get(NEW_KEY_COOKIE) if done == "created" else None
    response = _profile(page, notice=NOTICES.get(done or ""), new_key=new_key)
    response.delete_cookie(NEW_KEY_COOKIE, path="/profile")
    return response


@router.post("/profile")
async def update_profile(page: PageDep) -> Response:
    form = await page.form()
    if page.user is None:
        return page.redirect("/sign-in?next=/profile")
    data = await page.request.form()
    changes: dict[str, Any] = {
        "display_name": form.get("display_name", ""),
        "skill_level": form.get("skill_level") or None,
        "events": [e for e in data.getlist("events") if isinstance(e, str)],
        "classification": form.get("classification") or None,
    }
    try:
        patch = ProfilePatch.model_validate(changes)
        page.principal.user = page.components.accounts.update_profile(
            page.user, patch.model_dump(exclude_unset=True)
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        return _profile(page, 422, error=f"{field}: {first['msg']}")
    return _done(page, "saved")


@router.post("/profile/password")
async def change_password(page: PageDep) -> Response:
    form = await page.form()
    if page.user is None:
        return page.redirect("/sign-in?next=/profile")
    try:
        await asyncio.to_thread(
            page.components.accounts.change_password,
            page.user,
            current=form.get("current_password", "")[:1024],
            new=form.get("new_password", "")[:1024],
        )
    except AppError as exc:
        return _profile(page, exc.status, error=exc.message)
    response = page.render(
        "sign_in.html",
        next="/profile",
        error=None,
        email=page.user.email,
        notice="Password changed. Every session was signed out: sign in again.",
    )
    cookies.clear_session(response)
    return response


@router.post("/profile/keys")
async def create_key(page: PageDep) -> Response:
    form = await page.form()
    if page.user is None:
        return page.redirect("/sign-in?next=/profile")
    name = (form.get("name") or "key").strip()[:100] or "key"
    _key, raw = page.components.accounts.create_api_key(page.user, name)
    return _done(page, "created", new_key=raw)  # only its hash is kept


@router.post("/profile/keys/{key_id}/revoke")
async def revoke_key(key_id: int, page: PageDep) -> Response:
    await page.form()
    if page.user is None:
        return page.redirect("/sign-in?next=/profile")
    try:
        page.components.accounts.revoke_api_key(page.user, key_id)
    except AppError as exc:
        return _profile(page, exc.status, error=exc.message)
    return _done(page, "revoked")


@router.get("/billing")
def billing_page(page: PageDep) -> Response:
    billing = page.components.billing
    if not billing.enabled:
        return page.render("billing_off.html")
    if page.user is None:
        return page.redirect("/sign-in?next=/billing")
    key = page.components.settings.stripe_publishable_key
    response = page.render(
        "billing.html",
        account=billing.status(page.user),
        plans=list(billing.plans.values()),
        currency=page.components.settings.currency,
        history=billing.history(page.user),
        stripe_key=key,
    )
    if key:  # Stripe.js and its card iframes, on this page alone
        response.headers["Content-Security-Policy"] = STRIPE_CSP
    return response
