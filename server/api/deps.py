"""Shared FastAPI dependencies: the components, the caller, and role checks."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from server.accounts.security import API_KEY_PREFIX, Forbidden, Unauthorized
from server.accounts.service import Principal
from server.components import Components
from server.db import User
from server.http import session
from server.schemas import MAX_ID

_bearer = HTTPBearer(auto_error=False, description="An access token or an API key (rk_...)")


def get_components(request: Request) -> Components:
    components: Components = request.app.state.components
    return components


ComponentsDep = Annotated[Components, Depends(get_components)]


def client_ip(request: Request, components: ComponentsDep) -> str:
    return session.client_address(
        request, trust_forwarded_for=components.settings.trust_forwarded_for
    )


ClientIp = Annotated[str, Depends(client_ip)]


def optional_principal(
    request: Request,
    components: ComponentsDep,
    ip: ClientIp,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The signed-in user, or a guest; a bad token is an error, never a silent guest.
    A Bearer header wins; else the web app's session cookie, whose state-changing requests
    must carry the CSRF header."""
    if credentials is not None:
        return components.accounts.authenticate(credentials.credentials)
    cookie = request.cookies.get(session.SESSION_COOKIE)
    if cookie is None:
        return Principal(user=None, guest_key=ip)
    if session.needs_csrf(request.method):
        session.check_csrf(request, request.headers.get(session.CSRF_HEADER))
    return components.accounts.authenticate(cookie)


def current_principal(principal: Annotated[Principal, Depends(optional_principal)]) -> Principal:
    if principal.user is None:
        raise Unauthorized()
    return principal


def current_user(principal: Annotated[Principal, Depends(current_principal)]) -> User:
    assert principal.user is not None
    return principal.user


def admin_user(user: Annotated[User, Depends(current_user)]) -> User:
    if user.role != "admin":
        raise Forbidden("administrators only")
    return user


def reviewer_user(user: Annotated[User, Depends(current_user)]) -> User:
    if user.role not in {"expert", "admin"}:
        raise Forbidden("experts and administrators only")
    return user


def chat_principal(
    principal: Annotated[Principal, Depends(optional_principal)], components: ComponentsDep
) -> Principal:
    """Who may chat: anyone in open mode (guests with their own limit), else signed-in users."""
    settings = components.settings
    if principal.user is None and settings.access_mode == "accounts":
        raise Unauthorized("sign in to chat")
    components.shutdown.refuse_new_work()
    components.startup.wait(settings.startup_wait_s)
    limit = settings.chat_user_limit if principal.user else settings.chat_guest_limit
    components.limiter.hit(limit, "chat", principal.rate_key, what="questions")
    return principal


def compat_identity(request: Request, components: ComponentsDep, ip: ClientIp) -> Principal:
    """For the OpenAI- and Ollama-compatible APIs, whose clients often insist on sending a
    placeholder key ("sk-none", "ollama"). Our API keys and access tokens are checked; any
    other value means a guest, who is then subject to the access mode."""
    header = request.headers.get("authorization", "")
    token = header[7:].strip() if header.lower().startswith("bearer ") else ""
    if token.startswith(API_KEY_PREFIX) or token.count(".") == 2:
        return components.accounts.authenticate(token)
    return Principal(user=None, guest_key=ip)


def compat_chat(
    principal: Annotated[Principal, Depends(compat_identity)], components: ComponentsDep
) -> Principal:
    return chat_principal(principal, components)


def compat_reader(
    principal: Annotated[Principal, Depends(compat_identity)], components: ComponentsDep
) -> Principal:
    return reader_principal(principal, components)


def reader_principal(
    principal: Annotated[Principal, Depends(optional_principal)], components: ComponentsDep
) -> Principal:
    """Who may read the knowledge base: anyone in open mode, else signed-in users."""
    if principal.user is None and components.settings.access_mode == "accounts":
        raise Unauthorized("sign in to search")
    return principal


ObjectId = Annotated[int, Path(ge=1, le=MAX_ID)]
Offset = Annotated[int, Query(ge=0, le=MAX_ID)]


def _limit_searches(principal: Principal, components: Components) -> Principal:
    """Search and embeddings run the embedder on both cores: limit them like chat, and let
    them wait for a starting server (listing models need not)."""
    settings = components.settings
    limit = settings.search_user_limit if principal.user else settings.search_guest_limit
    components.limiter.hit(limit, "search", principal.rate_key, what="searches")
    components.startup.wait(settings.startup_wait_s)
    return principal


def search_principal(
    principal: Annotated[Principal, Depends(reader_principal)], components: ComponentsDep
) -> Principal:
    return _limit_searches(principal, components)


def compat_search(
    principal: Annotated[Principal, Depends(compat_reader)], components: ComponentsDep
) -> Principal:
    return _limit_searches(principal, components)


OptionalPrincipal = Annotated[Principal, Depends(optional_principal)]
CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
CurrentUser = Annotated[User, Depends(current_user)]
AdminUser = Annotated[User, Depends(admin_user)]
ReviewerUser = Annotated[User, Depends(reviewer_user)]
ChatPrincipal = Annotated[Principal, Depends(chat_principal)]
ReaderPrincipal = Annotated[Principal, Depends(reader_principal)]
CompatChat = Annotated[Principal, Depends(compat_chat)]
CompatReader = Annotated[Principal, Depends(compat_reader)]
SearchPrincipal = Annotated[Principal, Depends(search_principal)]
CompatSearch = Annotated[Principal, Depends(compat_search)]
