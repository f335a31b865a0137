"""The app factory: the only place settings, components, routes and middleware meet."""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import FrameType
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from sse_starlette.sse import AppStatus
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server import __version__, logs
from server.api import (
    admin,
    analytics,
    auth,
    billing,
    chat,
    conversations,
    experiments,
    finetune,
    health,
    knowledge,
    learning,
    metrics,
    ollama_compat,
    openai_compat,
    search,
    users,
)
from server.components import Components
from server.config import Settings
from server.errors import AppError, error_body
from server.http.csp import STRICT_CSP
from server.http.metrics import Metrics, MetricsMiddleware
from server.mcp.http import McpEndpoint
from server.schemas import COMMON_ERRORS
from server.web import account_pages, admin_pages, pages

log = logging.getLogger("server.http")

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}
_STATUS_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
# A client's X-Request-Id is kept only when it cannot forge or break a log line.
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def request_id_from(headers: dict[bytes, bytes]) -> str:
    offered = headers.get(b"x-request-id", b"").decode("latin-1")
    return offered if _SAFE_REQUEST_ID.fullmatch(offered) else uuid.uuid4().hex[:16]


def _too_large(limit: int) -> StarletteHTTPException:
    # An HTTPException, not a private error: FastAPI turns anything else raised while it
    # reads a body into a generic 400, which hid the 413 from chunked uploads.
    return StarletteHTTPException(413, f"request body exceeds {limit} bytes")


class GuardMiddleware:
    """Request id, body-size cap, security headers and an access log line, in one pass."""

    def __init__(self, app: ASGIApp, *, max_body: int, max_upload: int | None = None) -> None:
        self.app = app
        self.max_body = max_body
        self.max_upload = max(max_upload or 0, max_body)  # for the one upload route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        limit = self.max_upload if scope["path"] == knowledge.UPLOAD_PATH else self.max_body
        rid = request_id_from(headers)
        token = logs.request_id.set(rid)
        started = time.monotonic()
        status = 500
        declared = headers.get(b"content-length", b"")
        received = 0
        response_started = False

        async def guarded_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise _too_large(limit)
            return message

        async def send_with_headers(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                extra = [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
                # A page that needs more (the billing page's Stripe.js) sets its own.
                if not any(
                    k.lower() == b"content-security-policy" for k, _ in message.get("headers", [])
                ):
                    extra.append((b"content-security-policy", STRICT_CSP.encode()))
                message["headers"] = [
                    *message.get("headers", []),
                    *extra,
                    (b"x-request-id", rid.encode()),
                ]
            await send(message)

        try:
            if declared.isdigit() and int(declared) > limit:
                await _reply(
                    scope,
                    receive,
                    send_with_headers,
                    413,
                    "payload_too_large",
                    f"request body exceeds {limit} bytes",
                )
            else:
                await self.app(scope, guarded_receive, send_with_headers)
        except Exception:
            # Here, not in Starlette's outermost handler, so the 500 keeps its request id and
            # security headers, and the keep-alive connection survives.
            log.exception("unhandled error")
            if response_started:
                raise  # part of a reply is out: the connection must close
            await _reply(
                scope,
                receive,
                send_with_headers,
                500,
                "internal_error",
                "something went wrong on our side; the request id is in the logs",
            )
        finally:
            log.info(
                "%s %s -> %s in %.0f ms",
                scope["method"],
                scope["path"],
                status,
                (time.monotonic() - started) * 1000,
            )
            logs.request_id.reset(token)


async def _reply(
    scope: Scope, receive: Receive, send: Send, status: int, code: str, message: str
) -> None:
    body = error_body(code, message, request_id=logs.request_id.get())
    await JSONResponse(body, status_code=status)(scope, receive, send)


def _unparsable_body(exc: StarletteHTTPException) -> str | None:
    """FastAPI answers 400 "error parsing the body" for a body it could not decode; say why."""
    cause = exc.__cause__
    if exc.status_code != 400 or cause is None or "parsing the body" not in str(exc.detail):
        return None
    if isinstance(cause, UnicodeDecodeError):
        return "not valid UTF-8 (JSON bodies must be UTF-8)"
    if isinstance(cause, LookupError):
        return "unknown charset; send JSON as UTF-8"
    if isinstance(cause, RecursionError):
        return "nested too deeply"
    return f"could not be read ({type(cause).__name__})"


def _install_error_handlers(app: FastAPI) -> None:
    def reply(
        request: Request,
        status: int,
        code: str,
        message: str,
        *,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> JSONResponse:
        body = error_body(code, message, details=details, request_id=logs.request_id.get())
        return JSONResponse(body, status_code=status, headers=headers)

    @app.exception_handler(AppError)
    async def app_error(request: Request, exc: AppError) -> JSONResponse:
        return reply(
            request, exc.status, exc.code, exc.message, details=exc.details, headers=exc.headers
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        unparsable = _unparsable_body(exc)
        if unparsable:  # the same 422 as malformed JSON, with the reason
            return reply(request, 422, "validation_error", f"body: {unparsable}")
        code = _STATUS_CODES.get(exc.status_code, "http_error")
        message = "no such route" if exc.status_code == 404 else str(exc.detail)
        return reply(request, exc.status_code, code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {"field": ".".join(str(p) for p in err.get("loc", ())), "problem": err.get("msg")}
            for err in exc.errors()
        ]
        first = details[0] if details else {"field": "body", "problem": "invalid"}
        return reply(
            request,
            422,
            "validation_error",
            f"{first['field']}: {first['problem']}",
            details=details,
        )


def serve_app() -> FastAPI:
    """The factory `rodeoai serve` gives uvicorn (each worker calls it): settings from the
    environment, and the port open at once while the server loads."""
    settings = Settings()
    logs.configure(settings.log_level, as_json=settings.json_logs)
    return create_app(settings, start_in_background=True)


def create_app(settings: Settings | None = None, *, start_in_background: bool = False) -> FastAPI:
    """The app. Index checks, first-run ingestion and model loading are slow: by default
    start-up waits for them; in the background, /health says "loading" meanwhile, and
    questions wait up to RODEOAI_STARTUP_WAIT_S for them, then get 503 `starting`."""
    settings = settings or Settings()
    components = Components(settings)
    mcp_endpoint = McpEndpoint(components)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        _drain_on_sigterm(components)
        loader = threading.Thread(target=components.start, daemon=True)
        loader.start()
        if not start_in_background:
            await asyncio.to_thread(loader.join)
        purger = asyncio.create_task(_purge_answers(components))
        mailer = components.start_mail()  # None with no SMTP host
        async with mcp_endpoint.running():  # MCP's request handling lives in this scope
            yield
        purger.cancel()
        components.startup.stop.set()  # a shutdown mid-load stops at the next file
        await asyncio.to_thread(loader.join, 30)
        if mailer is not None:  # the mail in hand is finished before the engine goes
            await asyncio.to_thread(mailer.stop)
        components.close()

    app = FastAPI(
        title="RodeoAI",
        version=__version__,
        description="Offline rodeo expert: answers with cited sources from a local knowledge "
        'base. Every error has the shape {"error": {"code", "message"}}.',
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.components = components
    _install_error_handlers(app)
    if settings.metrics_enabled:  # its own registry: apps in one process never share numbers
        app.state.metrics = Metrics(components)
        app.state.metrics.attach(components)
        app.include_router(metrics.router)
    for module in (
        chat,
        conversations,
        search,
        health,
        auth,
        users,
        admin,
        knowledge,
        learning,
        experiments,
        analytics,
        finetune,
        billing,
        openai_compat,
        ollama_compat,
    ):
        app.include_router(module.router, responses=COMMON_ERRORS)
    # The web pages: no OpenAPI entries, and their static files under /static/web.
    app.include_router(pages.router)
    app.include_router(account_pages.router)
    app.include_router(admin_pages.router)
    app.mount("/static/web", pages.static, name="web-static")
    app.router.routes.append(mcp_endpoint.route())  # MCP over streamable HTTP at /mcp
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_credentials=False,
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    # A multipart upload carries a few hundred bytes of framing around the file.
    app.add_middleware(
        GuardMiddleware,
        max_body=settings.max_body_bytes,
        max_upload=settings.max_file_bytes + 64 * 1024,
    )
    if settings.metrics_enabled:  # outermost: the guard's own 413s and 500s count too
        app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    return app


def _drain_on_sigterm(components: Components) -> None:
    """Start the graceful-shutdown clock the moment SIGTERM arrives. Uvicorn's own handler
    (chained below) stops accepting connections at once, but tells the app only after the
    open ones have ended; streams need to hear it earlier, to finish within the grace."""
    if threading.current_thread() is not threading.main_thread():
        return  # in-process test clients: no signals to take
    # sse-starlette would otherwise cancel every event stream the moment uvicorn hears the
    # signal, with no `done` event and no record of the answer.
    AppStatus.disable_automatic_graceful_drain()
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        components.shutdown.begin()
        log.info(
            "SIGTERM: draining; streaming answers end within %.0f s",
            components.settings.shutdown_grace_s,
        )
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)


PURGE_EVERY_S = 3600.0


async def _purge_answers(components: Components) -> None:
    """Answers past RODEOAI_ANSWER_RETENTION_DAYS go at start-up, then hourly."""
    if components.settings.answer_retention_days <= 0:
        return
    while True:
        try:
            await asyncio.to_thread(components.privacy.purge_expired)
        except Exception:  # a locked or unreachable database: try again next time
            log.exception("could not purge expired answers")
        await asyncio.sleep(PURGE_EVERY_S)
