"""An Ollama-compatible API under /ollama: point an Ollama client or UI at
http://HOST:PORT/ollama and it talks to RodeoAI, with retrieval and citations included."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse, StreamingResponse
from pydantic import BaseModel, Field

from server import __version__
from server.api.compat import StreamEnd, checked_pieces
from server.api.deps import CompatChat, CompatReader, CompatSearch, ComponentsDep
from server.chat.answers import ChatRun
from server.components import Components
from server.rag.embedder import embed_inputs
from server.schemas import error_responses

router = APIRouter(prefix="/ollama", tags=["ollama-compatible"])
MODEL_NAME = "rodeoai:latest"


class OllamaMessage(BaseModel):
    role: str
    content: str = ""


class OllamaChatRequest(BaseModel):
    model: str = MODEL_NAME
    messages: list[OllamaMessage] = Field(min_length=1, max_length=200)
    stream: bool = True
    options: dict[str, Any] = {}


class OllamaGenerateRequest(BaseModel):
    model: str = MODEL_NAME
    prompt: str
    stream: bool = True
    options: dict[str, Any] = {}


class OllamaEmbedRequest(BaseModel):
    model: str = MODEL_NAME
    input: str | list[str]


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


async def _start(
    components: Components, principal: Any, messages: list[dict[str, str]], options: dict[str, Any]
) -> ChatRun:
    user = principal.user
    level = (user.skill_level if user else None) or components.settings.default_skill_level
    limit = options.get("num_predict")
    return await components.chat.begin(
        [m for m in messages if m["role"] in {"user", "assistant"}],
        skill_level=level,
        user_id=user.id if user else None,
        api="ollama",
        guest_key=principal.guest_key,
        max_tokens=int(limit) if isinstance(limit, int) and limit > 0 else None,
    )


def _final(run: ChatRun, started: float) -> dict[str, Any]:
    assert run.answer is not None
    answer = run.answer
    return {
        "done": True,
        "done_reason": "stop",
        "total_duration": int((time.monotonic() - started) * 1e9),
        "prompt_eval_count": answer.tokens_in,
        "eval_count": answer.tokens_out,
        "rodeoai": {
            "answer_id": answer.answer_id,
            "sources": answer.sources,
            "backend": answer.backend,
            "skipped_backends": answer.skipped_backends,
            "replaced": answer.replaced,
        },
    }


async def _respond(components: Components, run: ChatRun, *, chat: bool, stream: bool) -> Any:
    started = run.started

    def piece(text: str) -> dict[str, Any]:
        body: dict[str, Any] = {"model": MODEL_NAME, "created_at": _now()}
        if chat:
            body["message"] = {"role": "assistant", "content": text}
        else:
            body["response"] = text
        return body

    if not stream:
        answer = await components.chat.complete(run)
        return {**piece(answer.response), **_final(run, started)}

    async def lines() -> AsyncIterator[str]:
        async for part in checked_pieces(components.chat, run):
            if not isinstance(part, StreamEnd):
                yield json.dumps({**piece(part), "done": False}) + "\n"
            elif part.error is None:
                yield json.dumps({**piece(""), **_final(run, started)}) + "\n"
            else:
                end = {"done": True, "done_reason": "error", "rodeoai": {"error": part.error}}
                yield json.dumps({**piece(""), **end}) + "\n"

    return StreamingResponse(lines(), media_type="application/x-ndjson")


@router.get("", include_in_schema=False)
@router.get("/", include_in_schema=False)
def running() -> PlainTextResponse:
    return PlainTextResponse("Ollama is running")


@router.get("/api/version")
def version() -> dict[str, str]:
    return {"version": f"rodeoai-{__version__}"}


@router.get("/api/tags")
def tags(_reader: CompatReader) -> dict[str, Any]:
    return {
        "models": [
            {
                "name": MODEL_NAME,
                "model": MODEL_NAME,
                "modified_at": _now(),
                "size": 0,
                "digest": "rodeoai",
                "details": {
                    "format": "rag",
                    "family": "rodeoai",
                    "parameter_size": "",
                    "quantization_level": "",
                },
            }
        ]
    }


def _ndjson(kind: str) -> dict[int | str, dict[str, Any]]:
    return {
        **error_responses(402),
        200: {
            "description": f"One JSON object, or with `stream: true` (the default) one {kind} "
            "object per line as NDJSON; the last line has `done: true`, the metrics and a "
            "`rodeoai` field with the sources",
            "content": {"application/json": {}, "application/x-ndjson": {}},
        },
    }


@router.post("/api/chat", responses=_ndjson("chat message"))
async def chat(body: OllamaChatRequest, components: ComponentsDep, principal: CompatChat) -> Any:
    messages = [{"role": m.role, "content": m.content} for m in body.messages]
    run = await _start(components, principal, messages, body.options)
    return await _respond(components, run, chat=True, stream=body.stream)


@router.post("/api/generate", responses=_ndjson("response"))
async def generate(
    body: OllamaGenerateRequest, components: ComponentsDep, principal: CompatChat
) -> Any:
    run = await _start(
        components, principal, [{"role": "user", "content": body.prompt}], body.options
    )
    return await _respond(components, run, chat=False, stream=body.stream)


@router.post("/api/embed")
async def embed(
    body: OllamaEmbedRequest, components: ComponentsDep, _reader: CompatSearch
) -> dict[str, Any]:
    _, vectors = await asyncio.to_thread(embed_inputs, components.embedder, body.input)
    return {"model": MODEL_NAME, "embeddings": [v.tolist() for v in vectors]}
