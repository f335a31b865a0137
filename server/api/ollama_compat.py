"""An Ollama-compatible API under /ollama: point an Ollama client or UI at
http://HOST:PORT/ollama and it talks to RodeoAI, with retrieval and citations included.
Everything Open WebUI calls is here: tags, ps, show, version, chat, generate and embed; and
a second model, `rodeoai-tasks`, for a front end's background tasks."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import PlainTextResponse, StreamingResponse
from pydantic import BaseModel, Field

from server import __version__
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
from server.chat.answers import ChatRun
from server.chat.client_tasks import TASK_MODEL, Task
from server.components import Components
from server.errors import NotFound
from server.rag.embedder import embed_inputs
from server.schemas import error_responses

router = APIRouter(prefix="/ollama", tags=["ollama-compatible"])
MODEL_NAME = "rodeoai:latest"
TASK_MODEL_NAME = f"{TASK_MODEL}:latest"
# Who is asking, not yet admitted: a question and a task are limited differently (`admit`).
CompatCaller = Annotated[Principal, Depends(compat_identity)]


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
            "dropped": answer.dropped,
        },
    }


def _piece(model: str, text: str, *, chat: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "created_at": _now()}
    if chat:
        body["message"] = {"role": "assistant", "content": text}
    else:
        body["response"] = text
    return body


async def _respond(components: Components, run: ChatRun, *, chat: bool, stream: bool) -> Any:
    started = run.started
    footer = components.settings.sources_footer
    if not stream:
        answer = await components.chat.complete(run)
        text = shown_text(answer, footer=footer)
        return {**_piece(MODEL_NAME, text, chat=chat), **_final(run, started)}

    async def lines() -> AsyncIterator[str]:
        async for part in checked_pieces(components.chat, run, footer=footer):
            if not isinstance(part, StreamEnd):
                yield json.dumps({**_piece(MODEL_NAME, part, chat=chat), "done": False}) + "\n"
            elif part.error is None:
                final = {**_piece(MODEL_NAME, "", chat=chat), **_final(run, started)}
                yield json.dumps(final) + "\n"
            else:
                end = {"done": True, "done_reason": "error", "rodeoai": {"error": part.error}}
                yield json.dumps({**_piece(MODEL_NAME, "", chat=chat), **end}) + "\n"

    return StreamingResponse(lines(), media_type="application/x-ndjson")


async def _respond_task(
    components: Components, task: Task, model: str, *, chat: bool, stream: bool
) -> Any:
    """A front end's background task: answered at once, with no model tokens counted."""
    started = time.monotonic()
    name = TASK_MODEL_NAME if is_task_model(model) else MODEL_NAME
    text = await task_reply(components, task)
    final = {
        "done": True,
        "done_reason": "stop",
        "total_duration": int((time.monotonic() - started) * 1e9),
        "prompt_eval_count": 0,
        "eval_count": 0,
        "rodeoai": {"task": task.kind},
    }
    if not stream:
        return {**_piece(name, text, chat=chat), **final}
    lines = [
        {**_piece(name, text, chat=chat), "done": False},
        {**_piece(name, "", chat=chat), **final},
    ]
    body = "".join(json.dumps(line) + "\n" for line in lines)
    return PlainTextResponse(body, media_type="application/x-ndjson")


@router.get("", include_in_schema=False)
@router.get("/", include_in_schema=False)
def running() -> PlainTextResponse:
    return PlainTextResponse("Ollama is running")


@router.get("/api/version")
def version() -> dict[str, str]:
    """Semver, as Ollama answers: Open WebUI compares versions numerically."""
    return {"version": __version__}


def _model_entry(name: str) -> dict[str, Any]:
    """A model as /api/tags, /api/ps and /api/show describe it."""
    digest = hashlib.sha256(f"{name}@{__version__}".encode()).hexdigest()
    return {
        "name": name,
        "model": name,
        "modified_at": _now(),
        "size": 0,
        "digest": digest,
        "details": {
            "parent_model": "",
            "format": "rag",
            "family": "rodeoai",
            "families": ["rodeoai"],
            "parameter_size": "",
            "quantization_level": "",
        },
    }


MODELS = (MODEL_NAME, TASK_MODEL_NAME)
# Our models are always loaded: a keep-alive that never ends, as Ollama's keep_alive=-1.
NEVER_EXPIRES = "2318-01-01T00:00:00Z"


@router.get("/api/tags")
def tags(_reader: CompatReader) -> dict[str, Any]:
    return {"models": [_model_entry(name) for name in MODELS]}


@router.get("/api/ps")
def loaded(_reader: CompatReader) -> dict[str, Any]:
    """The running models; Open WebUI asks on every model refresh."""
    return {
        "models": [
            {**_model_entry(name), "expires_at": NEVER_EXPIRES, "size_vram": 0} for name in MODELS
        ]
    }


class OllamaShowRequest(BaseModel):
    model: str | None = Field(default=None, max_length=200)
    name: str | None = Field(default=None, max_length=200, description="Older clients' field")


def _known(name: str) -> str:
    """A model name as listed, or 404: "rodeoai" and "rodeoai:latest" are the same."""
    full = name if ":" in name else f"{name}:latest"
    if full not in MODELS:
        raise NotFound(f"model {name!r} not found; this server has {', '.join(MODELS)}")
    return full


@router.post("/api/show")
def show(body: OllamaShowRequest, _reader: CompatReader) -> dict[str, Any]:
    name = _known(body.model or body.name or MODEL_NAME)
    entry = _model_entry(name)
    about = (
        "answers a chat front end's background tasks (titles, tags, follow-ups)"
        if name == TASK_MODEL_NAME
        else "answers rodeo questions from its knowledge base, with citations"
    )
    return {
        "license": "",
        "modelfile": f"# {name}: RodeoAI {__version__}, {about}\n",
        "parameters": "",
        "template": "",
        "details": entry["details"],
        "model_info": {"general.architecture": "rodeoai", "general.basename": name},
        "capabilities": ["completion"],
        "modified_at": entry["modified_at"],
    }


def _ndjson(kind: str) -> dict[int | str, dict[str, Any]]:
    return {
        **error_responses(402),
        200: {
            "description": f"One JSON object, or with `stream: true` (the default) one {kind} "
            "object per line as NDJSON; the last line has `done: true`, the metrics and a "
            "`rodeoai` field with the sources. A chat front end's background task, or any "
            f"request naming `{TASK_MODEL}`, is answered without the LLM, a quota debit or "
            "an answer record; its `rodeoai` field says which task it was",
            "content": {"application/json": {}, "application/x-ndjson": {}},
        },
    }


@router.post("/api/chat", responses=_ndjson("chat message"))
async def chat(body: OllamaChatRequest, components: ComponentsDep, caller: CompatCaller) -> Any:
    messages = [{"role": m.role, "content": m.content} for m in body.messages]
    task = client_task(components, messages, body.model)
    principal = admit(caller, components, task)
    if task is not None:
        return await _respond_task(components, task, body.model, chat=True, stream=body.stream)
    run = await _start(components, principal, messages, body.options)
    return await _respond(components, run, chat=True, stream=body.stream)


@router.post("/api/generate", responses=_ndjson("response"))
async def generate(
    body: OllamaGenerateRequest, components: ComponentsDep, caller: CompatCaller
) -> Any:
    messages = [{"role": "user", "content": body.prompt}]
    task = client_task(components, messages, body.model)
    principal = admit(caller, components, task)
    if task is not None:
        return await _respond_task(components, task, body.model, chat=False, stream=body.stream)
    run = await _start(components, principal, messages, body.options)
    return await _respond(components, run, chat=False, stream=body.stream)


@router.post("/api/embed")
async def embed(
    body: OllamaEmbedRequest, components: ComponentsDep, _reader: CompatSearch
) -> dict[str, Any]:
    _, vectors = await asyncio.to_thread(embed_inputs, components.embedder, body.input)
    return {"model": MODEL_NAME, "embeddings": [v.tolist() for v in vectors]}
