"""Browser sessions: the access and refresh tokens ride in HttpOnly, SameSite=Lax cookies,
never in localStorage, and every state-changing request that authenticates by cookie must
echo the CSRF cookie (double submit) in a header or a form field.

API clients keep Bearer tokens; a Bearer header always wins over a cookie."""

from __future__ import annotations

import hmac
import secrets

from starlette.requests import HTTPConnection
from starlette.responses import Response

from server.accounts.service import TokenPair
from server.errors import AppError

SESSION_COOKIE = "rodeoai_session"
REFRESH_COOKIE = "rodeoai_refresh"
CSRF_COOKIE = "rodeoai_csrf"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Path "/" so a page load can renew an expired access cookie; SameSite=Strict keeps it off
# every cross-site request.
REFRESH_PATH = "/"


class CsrfFailed(AppError):
    status = 403
    code = "csrf_failed"

    def __init__(self) -> None:
        super().__init__("this form or request lacks its CSRF token; reload the page and try again")


def _secure(connection: HTTPConnection) -> bool:
    # Secure cookies are never sent over plain HTTP, which is how a LAN box is usually served.
    return connection.url.scheme == "https"


def csrf_token(connection: HTTPConnection) -> str:
    """The browser's CSRF token: the cookie's, or a new one that `keep_csrf` will set."""
    return connection.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(24)


def keep_csrf(connection: HTTPConnection, response: Response, token: str) -> None:
    if connection.cookies.get(CSRF_COOKIE) != token:
        response.set_cookie(
            CSRF_COOKIE, token, samesite="lax", secure=_secure(connection), path="/"
        )


def check_csrf(connection: HTTPConnection, presented: str | None) -> None:
    expected = connection.cookies.get(CSRF_COOKIE)
    if not expected or not presented or not hmac.compare_digest(expected, presented):
        raise CsrfFailed()


def needs_csrf(method: str) -> bool:
    return method.upper() not in SAFE_METHODS


def set_session(
    connection: HTTPConnection, response: Response, pair: TokenPair, *, refresh_days: int
) -> None:
    secure = _secure(connection)
    response.set_cookie(
        SESSION_COOKIE,
        pair.access_token,
        max_age=pair.expires_in,
        httponly=True,
        samesite="lax",
        secure=secure,
        path="/",
    )
    response.set_cookie(
        REFRESH_COOKIE,
        pair.refresh_token,
        max_age=refresh_days * 86400,
        httponly=True,
        samesite="strict",
        secure=secure,
        path=REFRESH_PATH,
    )


def clear_session(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.delete_cookie(REFRESH_COOKIE, path=REFRESH_PATH)


def client_address(connection: HTTPConnection, *, trust_forwarded_for: bool) -> str:
    """The caller's address: X-Forwarded-For's first hop only behind a trusted proxy."""
    if trust_forwarded_for:
        forwarded = connection.headers.get("x-forwarded-for", "")
        if forwarded:
            return forwarded.split(",")[0].strip()[:64]
    return connection.client.host if connection.client else "unknown"
