"""An OpenAI-compatible API, so existing OpenAI clients and UIs can use RodeoAI.

Answers include retrieval: each is grounded in the knowledge base, with the sources in an
extra `rodeoai` field. Our API keys (rk_...) work as the OpenAI key.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from server.api.compat import StreamEnd, checked_pieces
from server.api.deps import CompatChat, CompatReader, CompatSearch, ComponentsDep
from server.chat.answers import ChatRun, answer_dict
from server.components import Components
from server.rag.embedder import embed_inputs
from server.schemas import error_responses

router = APIRouter(prefix="/v1", tags=["openai-compatible"])
MODEL_ID = "rodeoai"


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
        )
    }


@router.post(
    "/chat/completions",
    responses={
        **error_responses(402),
        200: {
            "description": "A chat.completion object, or with `stream: true` server-sent "
            "`chat.completion.chunk` events ending with `data: [DONE]`",
            "content": {"application/json": {}, "text/event-stream": {}},
        },
    },
)
async def chat_completions(
    body: CompletionRequest, components: ComponentsDep, principal: CompatChat
) -> Any:
    """OpenAI Chat Completions, streaming or not, with retrieval and citations included."""
    run = await start(body, components, principal)
    ident, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
    if not body.stream:
        answer = await components.chat.complete(run)
        return {
            "id": ident,
            "object": "chat.completion",
            "created": created,
            "model": MODEL_ID,
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": answer.response},
                }
            ],
            "usage": {
                "prompt_tokens": answer.tokens_in,
                "completion_tokens": answer.tokens_out,
                "total_tokens": answer.tokens_in + answer.tokens_out,
            },
            "rodeoai": _extra(run),
        }

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        payload = {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created,
            "model": MODEL_ID,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **extra,
        }
        return f"data: {json.dumps(payload)}\n\n"

    async def events() -> AsyncIterator[str]:
        yield chunk({"role": "assistant", "content": ""})
        async for piece in checked_pieces(components.chat, run):
            if not isinstance(piece, StreamEnd):
                yield chunk({"content": piece})
            elif piece.error is None:
                yield chunk({}, "stop", rodeoai=_extra(run))
            else:
                yield chunk({}, "stop", rodeoai={"error": piece.error})
        yield "data: [DONE]\n\n"

    return StreamingResponse(
        events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )


@router.get("/models")
def list_models(_reader: CompatReader) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [{"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "rodeoai"}],
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
