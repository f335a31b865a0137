"""Failover across backends. It switches only before the first token, skips a backend that
failed recently, and records which backend answered and why the others were skipped."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import cast

from server.errors import BackendError, Busy
from server.llm.base import Backend, GenerationRequest

log = logging.getLogger(__name__)

# Told of each backend skipped, with its name and why in one word: excluded, cooling_down,
# timeout, no_output or error (the Prometheus failover counter listens); the chain never
# learns who listens.
SkipObserver = Callable[[str, str], None]


@dataclass
class Generation:
    backend: str
    model: str
    tokens: AsyncIterator[str]
    skipped: list[dict[str, str]] = field(default_factory=list)
    first_token_at: float = 0.0


def _kind(exc: BaseException) -> str:
    if isinstance(exc, StopAsyncIteration):
        return "no_output"
    return "timeout" if isinstance(exc, TimeoutError) else "error"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, StopAsyncIteration):
        return "no output"
    if isinstance(exc, TimeoutError):
        return "no first token before the deadline"
    return str(exc) or type(exc).__name__


class FailoverChain:
    def __init__(
        self,
        backends: list[Backend],
        *,
        cooldown_s: float = 30.0,
        first_token_timeout_s: float = 30.0,
        observers: list[SkipObserver] | None = None,
    ) -> None:
        if not backends:
            raise ValueError("at least one backend is required")
        self.backends = backends
        self.cooldown_s = cooldown_s
        self.first_token_timeout_s = first_token_timeout_s
        self._failed_at: dict[int, float] = {}  # by position: two backends may share a name
        self.observers = observers if observers is not None else []

    def _skip(self, skipped: list[dict[str, str]], backend: str, reason: str, kind: str) -> None:
        skipped.append({"backend": backend, "reason": reason})
        for observer in self.observers:
            try:
                observer(backend, kind)
            except Exception:  # a listener's fault never costs an answer
                log.exception("a failover observer failed")

    def close(self) -> None:
        for backend in self.backends:
            backend.close()

    def describe(self) -> list[dict[str, object]]:
        return [b.describe() for b in self.backends]

    def _order(self, prefer: str | None) -> list[tuple[int, Backend]]:
        """Positions and backends in failover order; a preferred backend goes first."""
        ordered = list(enumerate(self.backends))
        return sorted(ordered, key=lambda item: item[1].name != prefer) if prefer else ordered

    async def start(
        self,
        request: GenerationRequest,
        *,
        exclude: frozenset[str] = frozenset(),
        prefer: str | None = None,
    ) -> Generation:
        skipped: list[dict[str, str]] = []
        for position, backend in self._order(prefer):
            if backend.name in exclude:
                self._skip(skipped, backend.name, "not included in the plan", "excluded")
                continue
            failed = self._failed_at.get(position)
            if failed is not None and time.monotonic() - failed < self.cooldown_s:
                self._skip(skipped, backend.name, "cooling down after a failure", "cooling_down")
                continue
            stream = cast(AsyncGenerator[str, None], backend.stream(request))
            try:
                wait = min(self.first_token_timeout_s, request.remaining())
                first = await asyncio.wait_for(anext(stream), timeout=wait)
            except Busy:
                await stream.aclose()
                raise
            except (Exception, TimeoutError) as exc:
                await stream.aclose()
                self._failed_at[position] = time.monotonic()
                self._skip(skipped, backend.name, _reason(exc), _kind(exc))
                log.warning(
                    "backend %s failed before its first token: %s", backend.name, _reason(exc)
                )
                continue
            self._failed_at.pop(position, None)
            return Generation(
                backend.name,
                backend.model_for(request),
                _prepend(first, stream),
                skipped,
                time.monotonic(),
            )
        raise BackendError("every backend failed", details=skipped)


async def _prepend(first: str, rest: AsyncGenerator[str, None]) -> AsyncIterator[str]:
    try:
        yield first
        async for token in rest:
            yield token
    finally:
        await rest.aclose()
