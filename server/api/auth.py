"""Sign-up, sign-in, token refresh, sign-out, password change and reset, and OAuth."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request, status
from fastapi.responses import RedirectResponse

from server.accounts.service import TokenPair
from server.api.deps import ClientIp, ComponentsDep, CurrentPrincipal, CurrentUser
from server.http import session
from server.schemas import (
    AcceptedOut,
    ErrorOut,
    LoginIn,
    PasswordChangeIn,
    RefreshIn,
    RegisterIn,
    ResetConfirmIn,
    ResetRequestIn,
    TokenOut,
)

router = APIRouter(prefix="/api/auth", tags=["auth"])
_ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorOut},
    422: {"model": ErrorOut},
    429: {"model": ErrorOut},
}


def _tokens(pair: TokenPair) -> TokenOut:
    return TokenOut(
        access_token=pair.access_token, refresh_token=pair.refresh_token, expires_in=pair.expires_in
    )


@router.post(
    "/register", status_code=status.HTTP_202_ACCEPTED, response_model=AcceptedOut, responses=_ERRORS
)
async def register(body: RegisterIn, components: ComponentsDep, ip: ClientIp) -> AcceptedOut:
    """Create an account. The reply is the same whether or not the address was taken."""
    await asyncio.to_thread(
        components.accounts.register,
        email=body.email,
        password=body.password,
        display_name=body.display_name,
        ip=ip,
    )
    return AcceptedOut(message="If the address was free, the account is ready: sign in.")


@router.post("/login", response_model=TokenOut, responses=_ERRORS)
async def login(body: LoginIn, components: ComponentsDep, ip: ClientIp) -> TokenOut:
    """Exchange e-mail and password for a 15-minute access token and a refresh token."""
    pair = await asyncio.to_thread(
        components.accounts.login, email=body.email, password=body.password, ip=ip
    )
    return _tokens(pair)


@router.post("/refresh", response_model=TokenOut, responses=_ERRORS)
async def refresh(body: RefreshIn, components: ComponentsDep, ip: ClientIp) -> TokenOut:
    """Spend a refresh token for a new pair. Reusing a spent one ends the whole session."""
    pair = await asyncio.to_thread(
        components.accounts.refresh, refresh_token=body.refresh_token, ip=ip
    )
    return _tokens(pair)


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT, responses=_ERRORS)
def logout(principal: CurrentPrincipal, components: ComponentsDep) -> None:
    """End this session: its access and refresh tokens stop working now."""
    components.accounts.logout(principal)


@router.post("/password", status_code=status.HTTP_204_NO_CONTENT, responses=_ERRORS)
async def change_password(
    body: PasswordChangeIn, user: CurrentUser, components: ComponentsDep
) -> None:
    """Change the password; every session of the user is signed out."""
    await asyncio.to_thread(
        components.accounts.change_password,
        user,
        current=body.current_password,
        new=body.new_password,
    )


@router.post(
    "/password-reset",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=AcceptedOut,
    responses=_ERRORS,
)
async def request_reset(
    body: ResetRequestIn, components: ComponentsDep, ip: ClientIp
) -> AcceptedOut:
    """Ask for a reset. The reply never says whether the address has an account. With
    e-mail on (RODEOAI_SMTP_HOST), the link is mailed to it; with none, an administrator
    hands out the link (`rodeoai users reset-link`)."""
    await asyncio.to_thread(components.accounts.request_password_reset, email=body.email, ip=ip)
    if components.accounts.mails:
        return AcceptedOut(message="If the address has an account, a reset link is on its way.")
    return AcceptedOut(message="If the address has an account, a reset has been started.")


@router.post("/password-reset/confirm", status_code=status.HTTP_204_NO_CONTENT, responses=_ERRORS)
async def confirm_reset(body: ResetConfirmIn, components: ComponentsDep) -> None:
    """Set a new password with a one-time reset token; all sessions are signed out."""
    await asyncio.to_thread(
        components.accounts.confirm_password_reset, token=body.token, new_password=body.new_password
    )


@router.get("/oauth/providers")
def oauth_providers(components: ComponentsDep) -> list[str]:
    """The configured sign-in providers."""
    return sorted(components.oauth.providers)


@router.get("/oauth/{provider}/login", status_code=302, responses={404: {"model": ErrorOut}})
async def oauth_login(provider: str, components: ComponentsDep) -> RedirectResponse:
    """Redirect to the provider, with state, nonce and PKCE S256."""
    return RedirectResponse(await components.oauth.login_url(provider), status_code=302)


@router.get(
    "/oauth/{provider}/callback",
    response_model=TokenOut,
    responses={400: {"model": ErrorOut}, 404: {"model": ErrorOut}},
)
async def oauth_callback(
    request: Request,
    provider: str,
    components: ComponentsDep,
    code: str | None = None,
    state: str | None = None,
    error: str | None = None,
) -> Any:
    """The provider sends the browser back here. A browser (it asks for HTML) gets the web
    app's session cookies and goes to the chat; any other client gets our token pair."""
    pair = await components.oauth.callback(provider, code=code, state=state, error=error)
    if "text/html" not in request.headers.get("accept", ""):
        return _tokens(pair)
    response = RedirectResponse("/", status_code=303)
    session.set_session(
        request, response, pair, refresh_days=components.settings.refresh_token_days
    )
    return response
