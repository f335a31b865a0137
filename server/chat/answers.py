"""What an answer is while it is made (`ChatRun`) and once it is settled (`ChatAnswer`), and
how either is measured and shown."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from server.chat.variants import DEFAULT, ChatVariant
from server.llm.base import GenerationRequest, Passage
from server.llm.chain import Generation
from server.llm.cleanup import clean_answer
from server.rag.retriever import Hit


@dataclass
class ChatAnswer:
    response: str
    sources: list[dict[str, object]]
    model: str
    backend: str
    latency_ms: int
    chunks_used: int
    skill_level: str
    skipped_backends: list[dict[str, str]] = field(default_factory=list)
    time_to_first_token_ms: int | None = None
    generation_ms: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    conversation_id: int | None = None
    replaced: bool = False  # the streamed draft was swapped for the quoted sources
    # Draft sentences the support check removed: {"sentence", "reason"} each.
    dropped: list[dict[str, str]] = field(default_factory=list)
    answer_id: int | None = None  # the answer's record, for feedback and review
    feedback_token: str | None = None  # a guest's key to rate this answer (only guests)

    def metrics(self) -> dict[str, Any]:
        return {
            "latency_ms": self.latency_ms,
            "time_to_first_token_ms": self.time_to_first_token_ms,
            "generation_ms": self.generation_ms,
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "chunks_used": self.chunks_used,
        }


@dataclass
class ChatRun:
    """An answer in progress: generation has produced its first token (or failed over)."""

    question: str
    skill_level: str
    passages: list[Passage]
    hits: list[Hit]
    facts: list[tuple[int, str]]
    request: GenerationRequest
    generation: Generation
    started: float
    user_id: int | None
    conversation_id: int | None
    save: bool
    api: str
    answer: ChatAnswer | None = None
    variant: ChatVariant = DEFAULT
    recorded: bool = True  # False for an operator's evaluation run

    @property
    def sources(self) -> list[dict[str, object]]:
        return [
            {
                "n": p.number,
                "source": p.source,
                "title": p.title,
                "chunk_id": self.hits[p.number - 1].chunk_id,
                "location": p.location,
                "score": round(self.hits[p.number - 1].score, 6),
                "cited": False,
            }
            for p in self.passages
        ]


def answer_of(
    run: ChatRun,
    text: str,
    sources: list[dict[str, object]],
    token_count: int,
    *,
    model: str,
    backend: str,
    skipped: list[dict[str, str]],
    tokens_in: int = 0,
    replaced: bool = False,
    dropped: list[dict[str, str]] | None = None,
) -> ChatAnswer:
    """The answer with its timings, measured now: finished, or as far as it got."""
    now, first = time.monotonic(), run.generation.first_token_at
    return ChatAnswer(
        response=text,
        sources=sources,
        model=model,
        backend=backend,
        latency_ms=int((now - run.started) * 1000),
        chunks_used=len(run.passages),
        skill_level=run.skill_level,
        skipped_backends=skipped,
        time_to_first_token_ms=int((first - run.started) * 1000),
        generation_ms=int((now - first) * 1000),
        tokens_in=tokens_in,
        tokens_out=token_count,
        conversation_id=run.conversation_id,
        replaced=replaced,
        dropped=dropped or [],
    )


def answer_dict(answer: ChatAnswer) -> dict[str, Any]:
    return asdict(answer)


def stream_tail(draft: str, answer: ChatAnswer) -> str:
    """What a plain-text stream must add after the draft so the reader ends with the
    checked answer: the quoted evidence, or a visible correction when the draft was
    replaced. (The SSE API sends the final answer in its `done` event instead.)"""
    final = answer.response
    if answer.replaced:
        return "\n\nCorrection: the sources do not support the draft above. " + final
    cleaned = clean_answer(draft, source_count=len(answer.sources))
    core = final.split("\n\nFrom the sources:")[0]
    evidence = final[len(core) :]
    if answer.dropped:
        removed = " ".join(f"\u201c{d['sentence']}\u201d" for d in answer.dropped)
        return f"\n\nCorrection: the sources do not support {removed} Disregard it." + evidence
    return (core[len(cleaned) :] if core.startswith(cleaned) else "") + evidence
