"""Request and response models of the HTTP API."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from server.config import SkillLevel


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=100_000)


class ChatRequest(BaseModel):
    messages: list[ChatMessage] = Field(min_length=1, max_length=200)
    skill_level: SkillLevel | None = Field(
        default=None, description="Overrides the default depth: beginner ... pro."
    )


class SourceOut(BaseModel):
    n: int = Field(description="The number the answer cites as [n].")
    source: str
    title: str
    chunk_id: int
    location: str | None
    score: float
    cited: bool


class SkippedBackend(BaseModel):
    backend: str
    reason: str


class ChatResponse(BaseModel):
    response: str
    sources: list[SourceOut]
    model: str
    backend: str
    latency_ms: int
    chunks_used: int
    skill_level: SkillLevel
    skipped_backends: list[SkippedBackend] = []


class SearchHit(BaseModel):
    source: str
    title: str
    chunk_id: int
    score: float
    text: str
    location: str | None


class HealthOut(BaseModel):
    status: Literal["ok", "degraded"]
    version: str
    models: dict[str, object]
    documents: int
    chunks: int
    index: dict[str, object]


class ErrorBody(BaseModel):
    code: str
    message: str
    details: object | None = None
    request_id: str | None = None


class ErrorOut(BaseModel):
    error: ErrorBody
