"""What the OpenAI- and Ollama-compatible streams share: the draft as it streams, then the
checked tail, then the Sources footer, then a clean end. Their clients have no `done` event
to carry a corrected answer, and a dropped connection reads as a network failure, so a
failure part-way ends with a visible note and a normal final chunk instead.

Also shared: telling a chat front end's background task (a title, tags, follow-ups) from a
question, and admitting each under its own limit. A task never takes a question's quota,
rate-limit budget or LLM slot."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from server.accounts.service import Principal
from server.api.deps import chat_principal, compat_reader, compat_search
from server.chat.answers import ChatAnswer, ChatRun, stream_tail
from server.chat.client_tasks import TASK_MODEL, Task, recognise
from server.chat.client_tasks import answer as answer_task
from server.chat.pipeline import ChatService
from server.components import Components
from server.errors import AppError, InvalidInput
from server.llm.remote import strip_remote

log = logging.getLogger(__name__)


def stream_error(exc: BaseException) -> dict[str, Any]:
    """The error a client is told about when an answer fails after its first token."""
    if isinstance(exc, AppError):
        return {"code": exc.code, "message": exc.message}
    log.exception("chat stream failed", exc_info=exc)
    return {"code": "internal_error", "message": "the answer failed part-way; try again"}


@dataclass
class StreamEnd:
    """The last item of `checked_pieces`: `error` is set when the answer failed part-way."""

    error: dict[str, Any] | None = None


async def checked_pieces(
    chat: ChatService, run: ChatRun, *, footer: bool = False
) -> AsyncIterator[str | StreamEnd]:
    """The answer's text as the client shows it. The footer comes after the answer is
    settled and recorded, so it is never stored in the record nor checked as model text."""
    draft: list[str] = []
    try:
        async for token in chat.tokens(run):
            draft.append(token)
            yield token
        assert run.answer is not None
        tail = stream_tail("".join(draft), run.answer)
        if tail:
            yield tail
        if footer and (sources := sources_footer(run.answer)):
            yield sources
        yield StreamEnd()
    except Exception as exc:  # after the first token there is no failover: say so
        error = stream_error(exc)
        yield f"\n\n(The answer stopped part-way: {error['message']}.)"
        yield StreamEnd(error)


def shown_text(answer: ChatAnswer, *, footer: bool) -> str:
    """A finished answer's text for a reply that is not streamed."""
    return answer.response + (sources_footer(answer) if footer else "")


_URL = re.compile(r"\b(?:https?|ftp)://\S+|\bwww\.\S+", re.I)


def sources_footer(answer: ChatAnswer) -> str:
    """A numbered list of the cited passages, title and location, under the answer: a
    client that reads only the text (Open WebUI, the llm CLI) still shows where each fact
    comes from. Plain words only: no links, so a rendering client fetches nothing."""
    numbers: dict[str, list[str]] = {}  # passages of one section share a line: "[1][2] ..."
    for source in answer.sources:
        if not source.get("cited"):
            continue
        title = _plain(str(source.get("title") or source.get("source") or "source"))
        location = _plain(str(source.get("location") or ""))
        where = f"{title}, {location}" if location and location.lower() != title.lower() else title
        numbers.setdefault(where, []).append(f"[{source['n']}]")
    lines = [f"- {''.join(marks)} {where}" for where, marks in numbers.items()]
    return "\n\nSources:\n" + "\n".join(lines) if lines else ""


def _plain(text: str) -> str:
    return " ".join(_URL.sub("", strip_remote(text)).split())


# --- client tasks --------------------------------------------------------------------------
NOT_A_TASK = (
    f"the model {TASK_MODEL} answers a chat front end's background tasks (titles, tags, "
    "follow-ups, search queries); ask questions with the model rodeoai"
)


def is_task_model(model: str | None) -> bool:
    return (model or "").split(":", 1)[0] == TASK_MODEL


def client_task(
    components: Components, messages: list[dict[str, str]], model: str | None
) -> Task | None:
    """The background task this request carries, or None for a question. A request naming
    the task model is always a task; recognition by content can be turned off."""
    named = is_task_model(model)
    if not named and not components.settings.detect_client_tasks:
        return None
    task = recognise(messages)
    if task is None and named:
        raise InvalidInput(NOT_A_TASK, code="not_a_task")
    return task


def admit(principal: Principal, components: Components, task: Task | None) -> Principal:
    """A question is limited as chat is; a task costs what a search costs, so a front
    end's three tasks per question do not spend the user's chat budget."""
    if task is None:
        return chat_principal(principal, components)
    return compat_search(compat_reader(principal, components), components)


async def task_reply(components: Components, task: Task) -> str:
    """The task's answer, off the event loop (tags and follow-ups run one search)."""
    retriever = components.retriever
    return await asyncio.to_thread(answer_task, task, lambda q, k: retriever.search(q, k))
