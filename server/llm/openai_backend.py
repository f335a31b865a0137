"""OpenAI (GPT-4o, fine-tuned models) or any OpenAI-compatible server, via the official client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

from server.errors import BackendError
from server.llm.base import Backend, GenerationRequest


class OpenAIBackend(Backend):
    name = "openai"

    def __init__(
        self, *, api_key: str, model: str, base_url: str | None = None, max_retries: int = 1
    ) -> None:
        from openai import AsyncOpenAI

        self._model = model
        self.base_url = base_url
        self._client = AsyncOpenAI(api_key=api_key, base_url=base_url, max_retries=max_retries)

    @property
    def model(self) -> str:
        return self._model

    def model_for(self, request: GenerationRequest) -> str:
        return request.models.get(self.name, self._model)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[str]:
        import openai

        try:
            stream = await self._client.chat.completions.create(
                model=self.model_for(request),
                messages=cast(Any, request.messages),
                max_tokens=request.max_tokens,
                temperature=request.temperature,
                stream=True,
                timeout=request.remaining(),
            )
            async with stream:
                async for chunk in stream:
                    if chunk.choices and chunk.choices[0].delta.content:
                        yield chunk.choices[0].delta.content
        except openai.APIError as exc:  # connection, timeout, 4xx/5xx: all mean "try the next"
            raise BackendError(f"openai: {type(exc).__name__}: {exc}") from exc
