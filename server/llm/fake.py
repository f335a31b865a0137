"""A scripted backend: fixed tokens, an optional delay, and failures on demand. For tests
that exercise everything around generation (retrieval, quotas, streaming, failover) without
loading a model; the real-model tests prove the real path."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from server.llm.base import Backend, GenerationRequest


class FakeBackend(Backend):
    name = "fake"

    def __init__(
        self,
        tokens: list[str],
        *,
        delay_s: float = 0.0,
        fail_before: Exception | None = None,
        fail_after: int | None = None,
    ) -> None:
        self.tokens = tokens
        self.delay_s = delay_s
        self.fail_before = fail_before
        self.fail_after = fail_after
        self.calls = 0

    @property
    def model(self) -> str:
        return "fake"

    async def stream(self, request: GenerationRequest) -> AsyncIterator[str]:
        self.calls += 1
        if self.fail_before is not None:
            raise self.fail_before
        for number, token in enumerate(self.tokens):
            if self.fail_after is not None and number == self.fail_after:
                raise RuntimeError("scripted failure mid-stream")
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            yield token
