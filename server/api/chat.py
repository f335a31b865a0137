"""Chat over REST, server-sent events and WebSocket. All three share ChatService."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import ValidationError
from sse_starlette.sse import EventSourceResponse

from server.accounts.service import Principal
from server.api.compat import stream_error
from server.api.deps import ChatPrincipal, ComponentsDep
from server.chat.answers import ChatRun, answer_dict
from server.chat.pipeline import ChatService
from server.components import Components
from server.errors import AppError
from server.schemas import ChatRequest, ChatResponse, ErrorOut

log = logging.getLogger(__name__)
router = APIRouter(tags=["chat"])

_ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorOut, "description": "Sign-in required (accounts mode) or bad token"},
    402: {"model": ErrorOut, "description": "No questions left today; nothing was spent"},
    404: {"model": ErrorOut, "description": "No such conversation"},
    422: {"model": ErrorOut, "description": "Empty, over-long or malformed question"},
    429: {"model": ErrorOut, "description": "Too many questions; see Retry-After"},
    503: {"model": ErrorOut, "description": "No knowledge loaded, or the model is busy"},
}


async def _begin(
    body: ChatRequest, components: Components, principal: Principal, api: str
) -> ChatRun:
    return await components.chat.begin_for(
        principal,
        [m.model_dump() for m in body.messages],
        skill_level=body.skill_level,
        conversation_id=body.conversation_id,
        save=body.save,
        api=api,
    )


@router.post("/api/chat", response_model=ChatResponse, responses=_ERRORS)
async def chat(
    body: ChatRequest, components: ComponentsDep, principal: ChatPrincipal
) -> ChatResponse:
    """Answer the last user message from the knowledge base, citing sources as [n].

    Depth follows `skill_level`, else the user's profile. A signed-in user's exchange is
    saved in `conversation_id`, or in a new conversation (its id is in the reply)."""
    run = await _begin(body, components, principal, "chat")
    return ChatResponse.model_validate(answer_dict(await components.chat.complete(run)))


async def chat_events(chat: ChatService, run: ChatRun) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """sources, then token..., then done (with the checked final answer) or error."""
    yield "sources", {"sources": run.sources, "conversation_id": run.conversation_id}
    try:
        async for token in chat.tokens(run):
            yield "token", {"text": token}
        assert run.answer is not None
        yield "done", answer_dict(run.answer)
    except Exception as exc:  # after the first token there is no failover: report it
        yield "error", stream_error(exc)


@router.post(
    "/api/chat/stream",
    responses={
        **_ERRORS,
        200: {
            "content": {"text/event-stream": {}},
            "description": "Events: `sources`, then `token` (repeated), then `done` or `error`. "
            "`done` carries the final, checked answer: render it in place of the streamed draft "
            "when `replaced` is true.",
        },
    },
)
async def chat_stream(
    body: ChatRequest, components: ComponentsDep, principal: ChatPrincipal
) -> EventSourceResponse:
    """The same answer as /api/chat, streamed as server-sent events. Closing the connection
    stops generation at once."""
    run = await _begin(body, components, principal, "chat")

    async def events() -> AsyncIterator[dict[str, str]]:
        async for event, data in chat_events(components.chat, run):
            yield {"event": event, "data": json.dumps(data)}

    return EventSourceResponse(events(), ping=15)


def _frame_text(message: MutableMapping[str, Any]) -> str | None:
    """A text frame's text, or a binary frame's bytes read as UTF-8 (None if they are not)."""
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    if message.get("text") is not None:
        return str(message["text"])
    try:
        return bytes(message.get("bytes") or b"").decode("utf-8")
    except UnicodeDecodeError:
        return None


@router.websocket("/ws/chat")
async def chat_socket(websocket: WebSocket) -> None:
    """Send `{"messages": [...], "skill_level"?, "conversation_id"?}` frames; receive
    `{"event": ..., "data": ...}` frames, as in /api/chat/stream. Authenticate with an
    `Authorization: Bearer` header or a `token` query parameter."""
    from server.api.deps import chat_principal

    components: Components = websocket.app.state.components
    await websocket.accept()
    token = (
        websocket.query_params.get("token")
        or websocket.headers.get("authorization", "").removeprefix("Bearer ").strip()
    )
    ip = websocket.client.host if websocket.client else "unknown"
    try:
        while True:
            raw = _frame_text(await websocket.receive())
            if raw is None:
                await websocket.send_json(
                    {
                        "event": "error",
                        "data": {
                            "code": "validation_error",
                            "message": "send each request as a JSON text frame (UTF-8)",
                        },
                    }
                )
                continue
            try:
                principal = (
                    components.accounts.authenticate(token)
                    if token
                    else Principal(user=None, guest_key=ip)
                )
                # In a thread: it may wait for start-up to finish.
                principal = await asyncio.to_thread(chat_principal, principal, components)
                body = ChatRequest.model_validate_json(raw)
                run = await _begin(body, components, principal, "ws")
            except ValidationError as exc:
                await websocket.send_json(
                    {
                        "event": "error",
                        "data": {
                            "code": "validation_error",
                            "message": str(exc.errors()[0]["msg"]),
                        },
                    }
                )
                continue
            except AppError as exc:
                await websocket.send_json({"event": "error", "data": stream_error(exc)})
                continue
            async for event, data in chat_events(components.chat, run):
                await websocket.send_json({"event": event, "data": data})
    except WebSocketDisconnect:
        return
