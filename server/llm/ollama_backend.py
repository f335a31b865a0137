"""An Ollama server, via the official `ollama` client."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx

from server.errors import BackendError
from server.llm.base import Backend, GenerationRequest


class OllamaBackend(Backend):
    name = "ollama"

    def __init__(self, *, host: str, model: str, timeout: float = 120) -> None:
        from ollama import AsyncClient

        self.host = host
        self._model = model
        self._client = AsyncClient(host=host, timeout=timeout)

    @property
    def model(self) -> str:
        return self._model

    def model_for(self, request: GenerationRequest) -> str:
        return request.models.get(self.name, self._model)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[str]:
        from ollama import ResponseError

        try:
            parts = await self._client.chat(
                model=self.model_for(request),
                messages=request.messages,
                stream=True,
                options={"num_predict": request.max_tokens, "temperature": request.temperature},
            )
            async for part in parts:
                piece = part.message.content if part.message else None
                if piece:
                    yield piece
        except (ResponseError, httpx.HTTPError, ConnectionError) as exc:
            raise BackendError(f"ollama: {type(exc).__name__}: {exc}") from exc
