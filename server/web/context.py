"""What every page handler needs: who is looking (from the session cookies, renewed when the
access cookie has expired), the CSRF token, and one way to render a template."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from server import __version__
from server.accounts.security import Unauthorized
from server.accounts.service import Principal, TokenPair
from server.components import Components
from server.http import session as cookies

HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=HERE / "templates")
SKILL_LEVELS = ("beginner", "intermediate", "advanced", "pro")


@dataclass
class Page:
    request: Request
    components: Components
    principal: Principal
    csrf: str
    renewed: TokenPair | None = None
    signed_out: bool = False  # the cookies named a session that is over: clear them
    flash: list[str] = field(default_factory=list)

    @property
    def user(self) -> Any:
        return self.principal.user

    def finish(self, response: Response) -> Response:
        """Every page reply goes through here, so renewed or stale cookies are settled."""
        if self.renewed:
            cookies.set_session(
                self.request,
                response,
                self.renewed,
                refresh_days=self.components.settings.refresh_token_days,
            )
        elif self.signed_out:
            cookies.clear_session(response)
        cookies.keep_csrf(self.request, response, self.csrf)
        return response

    def render(self, template: str, status: int = 200, **values: Any) -> Response:
        settings = self.components.settings
        context = {
            "page": self,
            "user": self.user,
            "csrf": self.csrf,
            "csrf_field": cookies.CSRF_FIELD,
            "version": __version__,
            "access_mode": settings.access_mode,
            "billing_enabled": self.components.billing.enabled,
            "oauth_providers": sorted(self.components.oauth.providers),
            "skill_levels": SKILL_LEVELS,
            **values,
        }
        response = templates.TemplateResponse(self.request, template, context, status_code=status)
        return self.finish(response)

    def refuse_unless_admin(self, path: str) -> Response | None:
        """A redirect to sign in, a 403 page for non-admins, or None for an administrator."""
        if self.user is None:
            return self.redirect(f"/sign-in?next={path}")
        if self.user.role != "admin":
            return self.render(
                "message.html",
                403,
                title="Administrators only",
                text="Ask an administrator of this box for access.",
            )
        return None

    def redirect(self, to: str) -> Response:
        return self.finish(RedirectResponse(to, status_code=303))

    async def form(self) -> dict[str, str]:
        """The posted form, after its CSRF field is checked; only text fields are kept."""
        data = await self.request.form()
        cookies.check_csrf(self.request, str(data.get(cookies.CSRF_FIELD) or ""))
        return {k: v for k, v in data.items() if isinstance(v, str)}

    def ip(self) -> str:
        return self.principal.guest_key or cookies.client_address(
            self.request, trust_forwarded_for=self.components.settings.trust_forwarded_for
        )


async def _principal(
    request: Request, components: Components
) -> tuple[Principal, TokenPair | None, bool]:
    """The signed-in user, renewed by the refresh cookie when the access cookie is stale;
    else a guest, and whether stale cookies should be cleared."""
    ip = cookies.client_address(
        request, trust_forwarded_for=components.settings.trust_forwarded_for
    )
    guest = Principal(user=None, guest_key=ip)
    access = request.cookies.get(cookies.SESSION_COOKIE)
    refresh = request.cookies.get(cookies.REFRESH_COOKIE)
    if access:
        try:
            return components.accounts.authenticate(access), None, False
        except Unauthorized:
            pass
    if not refresh:
        return guest, None, bool(access)
    try:
        pair = await asyncio.to_thread(components.accounts.refresh, refresh_token=refresh, ip=ip)
        return components.accounts.authenticate(pair.access_token), pair, False
    except Unauthorized:
        return guest, None, True


async def page(request: Request) -> Page:
    components: Components = request.app.state.components
    principal, renewed, stale = await _principal(request, components)
    return Page(
        request=request,
        components=components,
        principal=principal,
        csrf=cookies.csrf_token(request),
        renewed=renewed,
        signed_out=stale,
    )


PageDep = Annotated[Page, Depends(page)]
HTML = HTMLResponse
