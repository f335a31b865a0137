"""The last-resort backend: no model, just the most relevant sentences with citations.

It can always answer, so a question is never left without a grounded reply.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from server.llm.base import Backend, GenerationRequest


def extractive_answer(facts: list[tuple[int, str]], limit: int = 4) -> str:
    if not facts:
        return "I could not find anything about that in the knowledge base."
    return "From the knowledge base:\n" + "\n".join(f"- {s} [{n}]" for n, s in facts[:limit])


class ExtractiveBackend(Backend):
    name = "extractive"

    def __init__(self, *, limit: int = 4) -> None:
        self.limit = limit

    @property
    def model(self) -> str:
        return "extractive"

    async def stream(self, request: GenerationRequest) -> AsyncIterator[str]:
        yield extractive_answer(request.facts, self.limit)
