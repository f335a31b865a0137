"""The one small protocol every LLM backend implements, and what a request carries."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field


@dataclass
class Passage:
    """A retrieved chunk as the prompt numbers it: [number]."""

    number: int
    title: str
    source: str
    location: str | None
    text: str


@dataclass
class GenerationRequest:
    messages: list[dict[str, str]]
    question: str
    passages: list[Passage] = field(default_factory=list)
    # The sentences most relevant to the question, as (source number, sentence), best first.
    facts: list[tuple[int, str]] = field(default_factory=list)
    max_tokens: int = 256
    temperature: float = 0.2
    timeout_s: float = 120.0
    started: float = field(default_factory=time.monotonic)
    # An experiment's model for one backend, by backend name; backends that serve a
    # single loaded model (llama.cpp) ignore it.
    models: dict[str, str] = field(default_factory=dict)

    @property
    def deadline(self) -> float:
        return self.started + self.timeout_s

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())


class Backend(ABC):
    """Streams answer text. Raise BackendError (or anything) before the first token to let
    the failover chain try the next backend; Busy propagates to the client as 503."""

    name: str = "backend"

    @property
    @abstractmethod
    def model(self) -> str: ...

    def ready(self) -> bool:
        return True

    def model_for(self, request: GenerationRequest) -> str:
        """The model that answers this request."""
        return self.model

    def describe(self) -> dict[str, object]:
        return {"backend": self.name, "model": self.model, "ready": self.ready()}

    def close(self) -> None:
        """Stop what the backend runs in the background (the local model's decoding
        thread); nothing by default."""
        return None

    @abstractmethod
    def stream(self, request: GenerationRequest) -> AsyncIterator[str]: ...
