"""The chat pages, the API docs, the web app manifest, and two small JSON helpers the chat
script calls: render an answer, renew the session."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from server.accounts.security import Unauthorized
from server.errors import NotFound
from server.http import session as cookies
from server.web.context import HERE, PageDep
from server.web.render import answer_html

router = APIRouter(include_in_schema=False)
static = StaticFiles(directory=HERE / "static")
SWAGGER = "/static/web/vendor/swagger-ui-5.35.0"


def _message_view(message: Any) -> dict[str, Any]:
    sources = json.loads(message.sources_json or "[]")
    view: dict[str, Any] = {"role": message.role, "text": message.content, "sources": sources}
    if message.role == "assistant":
        view["html"] = answer_html(message.content, citations=len(sources))
        view["meta"] = {"backend": message.backend, "model": message.model}
        view["metrics"] = json.loads(message.metrics_json or "{}")
    return view


@router.get("/")
def chat_page(page: PageDep) -> Response:
    """Ask at once: guests in open mode, signed-in users with their saved conversations."""
    if page.user is None and page.components.settings.access_mode == "accounts":
        return page.redirect("/sign-in?next=/")
    return page.render("chat.html", conversation=None, messages=[])


@router.get("/c/{conversation_id}")
def conversation_page(conversation_id: int, page: PageDep) -> Response:
    if page.user is None:
        return page.redirect(f"/sign-in?next=/c/{conversation_id}")
    store = page.components.conversations
    try:
        conversation = store.get(page.user.id, conversation_id)
    except NotFound:
        return page.render(
            "message.html",
            404,
            title="No such conversation",
            text="It may have been deleted. Start a new chat instead.",
        )
    messages = [_message_view(m) for m in store.messages(conversation_id)]
    rated = [m["metrics"]["answer_id"] for m in messages if m.get("metrics", {}).get("answer_id")]
    ratings = page.components.feedback.ratings(page.user.id, rated)
    for m in messages:
        m["rating"] = ratings.get(m.get("metrics", {}).get("answer_id"))
    return page.render("chat.html", conversation=conversation, messages=messages)


class RenderIn(BaseModel):
    text: str = Field(max_length=40_000)
    citations: int = Field(default=0, ge=0, le=50)


@router.post("/web/render")
def render_answer(body: RenderIn, request: Request) -> JSONResponse:
    """The finished answer as sanitised HTML, rendered here, not by the browser."""
    cookies.check_csrf(request, request.headers.get(cookies.CSRF_HEADER))
    return JSONResponse({"html": answer_html(body.text, citations=body.citations)})


@router.post("/web/session/refresh")
async def refresh_session(request: Request, page: PageDep) -> Response:
    """The chat script calls this when an API call says the access cookie has expired."""
    cookies.check_csrf(request, request.headers.get(cookies.CSRF_HEADER))
    refresh = request.cookies.get(cookies.REFRESH_COOKIE)
    if not refresh:
        raise Unauthorized("signed out", code="invalid_refresh_token")
    try:
        pair = await asyncio.to_thread(
            page.components.accounts.refresh, refresh_token=refresh, ip=page.ip()
        )
    except Unauthorized:
        response = JSONResponse({"signed_in": False})
        cookies.clear_session(response)
        return response
    response = JSONResponse({"signed_in": True})
    cookies.set_session(
        request, response, pair, refresh_days=page.components.settings.refresh_token_days
    )
    return response


@router.get("/docs")
def api_docs(page: PageDep) -> Response:
    """Swagger UI 5 (it reads OpenAPI 3.1), vendored, booted by a script file: no inline JS."""
    return page.render("docs.html", swagger=SWAGGER)


@router.get("/manifest.webmanifest")
def manifest() -> FileResponse:
    return FileResponse(
        HERE / "static" / "manifest.webmanifest", media_type="application/manifest+json"
    )


@router.get("/favicon.ico")
def favicon() -> FileResponse:
    return FileResponse(HERE / "static" / "icon-192.png", media_type="image/png")


@router.get("/admin")
def admin_page(page: PageDep) -> Response:
    """Users and knowledge, for administrators."""
    if refused := page.refuse_unless_admin("/admin"):
        return refused
    components = page.components
    return page.render(
        "admin.html",
        documents=components.ingestor.documents(),
        users=components.accounts.list_users(limit=200),
        max_mb=round(components.settings.max_file_bytes / 1_000_000, 1),
    )


@router.get("/review")
def review_page(page: PageDep) -> Response:
    """The expert review queue, most needed first, with the corrected-answer editor."""
    if page.user is None:
        return page.redirect("/sign-in?next=/review")
    if page.user.role not in {"expert", "admin"}:
        return page.render(
            "message.html",
            403,
            title="Experts only",
            text="Ask an administrator to give your account the expert role.",
        )
    items = page.components.review.queue(limit=50)
    for item in items:
        item["html"] = answer_html(item["response"], citations=0)  # [n] stays plain text here
    return page.render("review.html", items=items)
