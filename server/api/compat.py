"""What the OpenAI- and Ollama-compatible streams share: the draft as it streams, then the
checked tail, then a clean end. Their clients have no `done` event to carry a corrected
answer, and a dropped connection reads as a network failure, so a failure part-way ends
with a visible note and a normal final chunk instead."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from server.chat.answers import ChatRun, stream_tail
from server.chat.pipeline import ChatService
from server.errors import AppError

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


async def checked_pieces(chat: ChatService, run: ChatRun) -> AsyncIterator[str | StreamEnd]:
    draft: list[str] = []
    try:
        async for token in chat.tokens(run):
            draft.append(token)
            yield token
        assert run.answer is not None
        tail = stream_tail("".join(draft), run.answer)
        if tail:
            yield tail
        yield StreamEnd()
    except Exception as exc:  # after the first token there is no failover: say so
        error = stream_error(exc)
        yield f"\n\n(The answer stopped part-way: {error['message']}.)"
        yield StreamEnd(error)
