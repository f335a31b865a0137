"""An OpenAI-compatible API, so existing OpenAI clients and UIs can use RodeoAI.

Answers include retrieval: each is grounded in the knowledge base, with the sources in an
extra `rodeoai` field and, for clients that read only the text, a Sources footer. Our API
keys (rk_...) work as the OpenAI key. A second model, `rodeoai-tasks`, answers a front
end's background tasks (titles, tags, follow-ups) without the LLM.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from server.accounts.service import Principal
from server.api.compat import (
    StreamEnd,
    admit,
    checked_pieces,
    client_task,
    is_task_model,
    shown_text,
    task_reply,
)
from server.api.deps import CompatReader, CompatSearch, ComponentsDep, compat_identity
from server.chat.answers import ChatRun, answer_dict
from server.chat.client_tasks import TASK_MODEL
from server.components import Components
from server.rag.embedder import embed_inputs
from server.schemas import error_responses

router = APIRouter(prefix="/v1", tags=["openai-compatible"])
MODEL_ID = "rodeoai"
# Who is asking, not yet admitted: a question and a task are limited differently (`admit`).
CompatCaller = Annotated[Principal, Depends(compat_identity)]


class OAIMessage(BaseModel):
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):  # content parts: keep the text ones
            return " ".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")
        return self.content or ""


class CompletionRequest(BaseModel):
    model: str = MODEL_ID
    messages: list[OAIMessage] = Field(min_length=1, max_length=200)
    stream: bool = False
    max_tokens: int | None = Field(default=None, ge=1, le=32768)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=32768)
    temperature: float | None = Field(default=None, ge=0, le=2)
    user: str | None = None


class EmbeddingRequest(BaseModel):
    input: str | list[str]
    model: str = "all-MiniLM-L6-v2"
    encoding_format: Literal["float", "base64"] = "float"


def plain_messages(messages: list[OAIMessage]) -> list[dict[str, str]]:
    """Our pipeline writes its own system prompt; a client's system text is dropped."""
    return [
        {"role": m.role, "content": m.text()} for m in messages if m.role in {"user", "assistant"}
    ]


async def start(body: CompletionRequest, components: Components, principal: Any) -> ChatRun:
    user = principal.user
    level = (user.skill_level if user else None) or components.settings.default_skill_level
    return await components.chat.begin(
        plain_messages(body.messages),
        skill_level=level,
        user_id=user.id if user else None,
        max_tokens=body.max_completion_tokens or body.max_tokens,
        api="openai",
        guest_key=principal.guest_key,
    )


def _extra(run: ChatRun) -> dict[str, Any]:
    assert run.answer is not None
    data = answer_dict(run.answer)
    return {
        key: data[key]
        for key in (
            "answer_id",
            "sources",
            "backend",
            "model",
            "skipped_backends",
            "latency_ms",
            "replaced",
            "dropped",
        )
    }


@router.post(
    "/chat/completions",
    responses={
        **error_responses(402),
        200: {
            "description": "A chat.completion object, or with `stream: true` server-sent "
            "`chat.completion.chunk` events ending with `data: [DONE]`. A chat front end's "
            "background task (a title, tags, follow-ups), or any request naming the model "
            f"`{TASK_MODEL}`, is answered in the shape its prompt asks for, without a quota "
            "debit or an answer record; its `rodeoai` field says which task it was",
            "content": {"application/json": {}, "text/event-stream": {}},
        },
    },
)
async def chat_completions(
    body: CompletionRequest, components: ComponentsDep, caller: CompatCaller
) -> Any:
    """OpenAI Chat Completions, streaming or not, with retrieval and citations included."""
    messages = [{"role": m.role, "content": m.text()} for m in body.messages]
    task = client_task(components, messages, body.model)
    principal = admit(caller, components, task)
    reply = Reply(
        f"chatcmpl-{uuid.uuid4().hex[:24]}",
        int(time.time()),
        TASK_MODEL if task is not None and is_task_model(body.model) else MODEL_ID,
    )
    if task is not None:
        text = await task_reply(components, task)
        extra = {"task": task.kind}
        if not body.stream:
            return reply.completion(text, extra)
        return _sse(reply.chunks(_once(text), extra))
    run = await start(body, components, principal)
    footer = components.settings.sources_footer
    if not body.stream:
        answer = await components.chat.complete(run)
        return reply.completion(
            shown_text(answer, footer=footer),
            _extra(run),
            (answer.tokens_in, answer.tokens_out),
        )
    return _sse(reply.chunks(checked_pieces(components.chat, run, footer=footer), None, run))


@dataclass
class Reply:
    """One completion's identity, and its body or chunks in OpenAI's shapes."""

    ident: str
    created: int
    model: str

    def completion(
        self, text: str, extra: dict[str, Any], tokens: tuple[int, int] = (0, 0)
    ) -> dict[str, Any]:
        return {
            "id": self.ident,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": text},
                }
            ],
            "usage": {
                "prompt_tokens": tokens[0],
                "completion_tokens": tokens[1],
                "total_tokens": tokens[0] + tokens[1],
            },
            "rodeoai": extra,
        }

    def chunk(self, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        payload = {
            "id": self.ident,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **extra,
        }
        return f"data: {json.dumps(payload)}\n\n"

    async def chunks(
        self,
        pieces: AsyncIterator[str | StreamEnd],
        extra: dict[str, Any] | None,
        run: ChatRun | None = None,
    ) -> AsyncIterator[str]:
        """The stream: a role chunk, the text, a final chunk with the `rodeoai` field."""
        yield self.chunk({"role": "assistant", "content": ""})
        async for piece in pieces:
            if not isinstance(piece, StreamEnd):
                yield self.chunk({"content": piece})
            elif piece.error is not None:
                yield self.chunk({}, "stop", rodeoai={"error": piece.error})
            else:
                yield self.chunk({}, "stop", rodeoai=_extra(run) if run else extra)
        yield "data: [DONE]\n\n"


async def _once(text: str) -> AsyncIterator[str | StreamEnd]:
    yield text
    yield StreamEnd()


def _sse(events: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(
        events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )


@router.get("/models")
def list_models(_reader: CompatReader) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {"id": name, "object": "model", "created": 0, "owned_by": "rodeoai"}
            for name in (MODEL_ID, TASK_MODEL)
        ],
    }


def _encode(vector: Any, body: EmbeddingRequest) -> Any:
    """The official client asks for base64 (little-endian float32) by default."""
    if body.encoding_format == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode()
    return vector.tolist()


@router.post("/embeddings")
async def embeddings(
    body: EmbeddingRequest, components: ComponentsDep, _reader: CompatSearch
) -> dict[str, Any]:
    """Vectors from the bundled embedder (384 dimensions, L2-normalised)."""
    embedder = components.embedder
    texts, vectors = await asyncio.to_thread(embed_inputs, embedder, body.input)
    tokens = sum(embedder.count_tokens(t) for t in texts)
    return {
        "object": "list",
        "model": embedder.name,
        "data": [
            {"object": "embedding", "index": i, "embedding": _encode(v, body)}
            for i, v in enumerate(vectors)
        ],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
