"""/mcp: the MCP server over streamable HTTP, inside the running app.

Each HTTP request is authenticated as the JSON API's are: a Bearer access token or API key,
else a guest known by address. In accounts mode a guest gets 401 in our error shape before
any MCP message is read. Each tool call then applies the same rules as its REST route
(server.api.deps): the chat rate limit and the quota for the expert, the search limit for
search, sign-in for reading, so a question costs the same here as on /api/chat.

Stateless and with JSON replies: any worker of `rodeoai serve --workers N` can answer any
request, since no MCP session lives in one worker's memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from server import logs
from server.accounts.security import Unauthorized
from server.accounts.service import Principal
from server.api import deps
from server.components import Components
from server.errors import AppError, error_body
from server.http import session
from server.mcp.server import Context, build_server

PATH = "/mcp"
_PRINCIPAL = "rodeoai.mcp.principal"  # where a request's caller waits in the ASGI scope


@dataclass
class RouteAccess:
    """The REST routes' rules, for the caller of one HTTP request."""

    principal: Principal
    components: Components

    def reader(self) -> Principal:
        return deps.reader_principal(self.principal, self.components)

    def searcher(self) -> Principal:
        return deps.search_principal(self.reader(), self.components)

    def asker(self) -> Principal:
        return deps.chat_principal(self.principal, self.components)


class McpEndpoint:
    """The ASGI app at /mcp; `running()` belongs in the app's lifespan."""

    def __init__(self, components: Components) -> None:
        self.components = components
        self.server = build_server(components, self._access)
        self._manager: StreamableHTTPSessionManager | None = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        # A manager runs once, so each start of the app (tests restart one) gets its own.
        manager = StreamableHTTPSessionManager(
            app=self.server,
            json_response=True,
            stateless=True,
            max_request_body_size=self.components.settings.max_body_bytes,
        )
        async with manager.run():
            self._manager = manager
            try:
                yield
            finally:
                self._manager = None

    def route(self) -> Route:
        """A plain route, not a mount: /mcp itself, with no redirect and no OpenAPI entry."""
        return Route(PATH, self, methods=["GET", "POST", "DELETE"])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            if self._manager is None:
                raise AppError("MCP is not running yet", code="starting", status=503)
            principal = await asyncio.to_thread(self._principal, request)
        except AppError as exc:
            body = error_body(exc.code, exc.message, request_id=logs.request_id.get())
            await JSONResponse(body, exc.status, headers=exc.headers)(scope, receive, send)
            return
        scope.setdefault("state", {})[_PRINCIPAL] = principal
        await self._manager.handle_request(scope, receive, send)

    def _principal(self, request: Request) -> Principal:
        """Who sends this request: as `deps.optional_principal` decides for the JSON API,
        minus the web session cookie (an MCP client has none, and a page must not)."""
        components = self.components
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return components.accounts.authenticate(token.strip())
        if components.settings.access_mode == "accounts":
            raise Unauthorized(
                "sign in: send Authorization: Bearer with an access token or an API key (rk_...)"
            )
        ip = session.client_address(
            request, trust_forwarded_for=components.settings.trust_forwarded_for
        )
        return Principal(user=None, guest_key=ip)

    def _access(self, ctx: Context) -> RouteAccess:
        request: Any = ctx.request
        principal = request.scope.get("state", {}).get(_PRINCIPAL) if request else None
        if not isinstance(principal, Principal):  # never a silent guest
            raise RuntimeError("an MCP request reached a tool without its caller")
        return RouteAccess(principal, self.components)
