"""Answering: retrieve -> pick facts -> prompt -> generate (streamed) -> check -> cite -> record.

Every API (REST, SSE, WebSocket, OpenAI- and Ollama-compatible) runs through `ChatService`,
so every answer gets the same grounding, citations and metrics.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import Engine

from server.billing.plans import BillingService
from server.chat.conversations import ConversationStore, title_from
from server.chat.prompting import (
    attribute,
    build_messages,
    fit_passages,
    select_facts,
    trim_history,
    ungrounded_numbers,
    with_evidence,
)
from server.config import Settings, SkillLevel
from server.db import AnswerMetric, write_session
from server.errors import InvalidInput
from server.llm.base import GenerationRequest, Passage
from server.llm.chain import FailoverChain, Generation
from server.llm.cleanup import cited_numbers, clean_answer, is_substantive
from server.llm.extractive import extractive_answer
from server.llm.remote import StreamFilter
from server.rag.embedder import Embedder
from server.rag.loaders import clean_text
from server.rag.retriever import Hit, Retriever

log = logging.getLogger(__name__)
PREMIUM_BACKENDS = frozenset({"openai"})  # cloud models: Pro plans only


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
    answer_id: int | None = None  # the answer's record, for feedback and review

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


class ChatService:
    def __init__(
        self,
        retriever: Retriever,
        chain: FailoverChain,
        embedder: Embedder,
        settings: Settings,
        engine: Engine,
        conversations: ConversationStore,
        billing: BillingService,
    ) -> None:
        self.retriever = retriever
        self.chain = chain
        self.embedder = embedder
        self.settings = settings
        self.engine = engine
        self.conversations = conversations
        self.billing = billing

    def validate(self, messages: list[dict[str, str]]) -> tuple[str, list[dict[str, str]]]:
        """The question is the last user message; earlier turns are history."""
        if len(messages) > self.settings.max_messages:
            raise InvalidInput(
                f"{len(messages)} messages sent; the limit is {self.settings.max_messages}",
                code="too_many_messages",
            )
        if not messages or messages[-1]["role"] != "user":
            raise InvalidInput("the last message must come from the user", code="no_question")
        # Cleaned as the knowledge is: NUL, control and zero-width characters are nothing.
        question = clean_text(messages[-1]["content"])
        if not question:
            raise InvalidInput("the question is empty", code="empty_question")
        if len(question) > self.settings.max_question_chars:
            raise InvalidInput(
                f"the question is {len(question)} characters; the limit is "
                f"{self.settings.max_question_chars}",
                code="question_too_long",
            )
        history = [m for m in messages[:-1] if m["role"] in {"user", "assistant"}]
        return question, history

    async def begin(
        self,
        messages: list[dict[str, str]],
        *,
        skill_level: SkillLevel = "intermediate",
        user_id: int | None = None,
        conversation_id: int | None = None,
        save: bool = False,
        max_tokens: int | None = None,
        api: str = "chat",
        guest_key: str | None = None,
    ) -> ChatRun:
        """Everything up to the first token, so overload (503) and bad input (4xx) are known
        before a streaming response starts. With `save`, a signed-in user's exchange is
        stored in `conversation_id` (which must be theirs) or in a new conversation."""
        started = time.monotonic()
        question, history = self.validate(messages)
        if conversation_id is not None:
            if user_id is None:
                raise InvalidInput("sign in to continue a conversation", code="sign_in_required")
            self.conversations.get(user_id, conversation_id)  # 404 unless it is theirs
            history = self.conversations.history(conversation_id)
        # Paid for before any work, so concurrent questions cannot overspend; given back if
        # no answer starts. The plan's tier decides which backends may answer.
        debit = await asyncio.to_thread(self.billing.debit_message, user_id, guest_key)
        try:
            request, hits, passages, facts = await self._prepare(
                question, history, skill_level, max_tokens
            )
            generation = await self.chain.start(
                request,
                exclude=PREMIUM_BACKENDS if debit.plan.tier == "local" else frozenset(),
            )
        except BaseException:  # busy, every backend down, no index, client gone
            await asyncio.shield(asyncio.to_thread(self.billing.refund_message, debit))
            raise
        return ChatRun(
            question,
            skill_level,
            passages,
            hits,
            facts,
            request,
            generation,
            started,
            user_id,
            conversation_id,
            save and user_id is not None,
            api,
        )

    async def _prepare(
        self,
        question: str,
        history: list[dict[str, str]],
        skill_level: SkillLevel,
        max_tokens: int | None,
    ) -> tuple[GenerationRequest, list[Hit], list[Passage], list[tuple[int, str]]]:
        """Retrieve, pick the facts and build the prompt."""
        query = question
        if history and len(question.split()) < 6:  # "what about heelers?" needs its context
            last_user = next((m["content"] for m in reversed(history) if m["role"] == "user"), "")
            query = f"{last_user} {question}"
        hits = await asyncio.to_thread(self.retriever.search, query, self.settings.top_k)
        passages = fit_passages(hits, self.embedder, self.settings.context_token_budget)
        facts = await asyncio.to_thread(
            select_facts, question, passages, self.embedder, self.settings.facts_in_prompt
        )
        budget = self.settings.history_token_budget * 4  # about four characters a token
        request = GenerationRequest(
            messages=build_messages(
                question, facts, skill_level, trim_history(history, max_chars=budget)
            ),
            question=question,
            passages=passages,
            facts=facts,
            max_tokens=min(
                max_tokens or self.settings.llm_max_tokens, self.settings.llm_max_tokens
            ),
            temperature=self.settings.llm_temperature,
            timeout_s=self.settings.generation_timeout_s,
        )
        return request, hits, passages, facts

    async def tokens(self, run: ChatRun) -> AsyncIterator[str]:
        """Stream the draft, then settle the final answer on `run.answer` and record it."""
        parts: list[str] = []
        count = 0
        remote = StreamFilter()  # the draft is shown as it streams, so filter it as it goes
        try:
            async for token in run.generation.tokens:
                count += 1
                text = remote.feed(token)
                if text:
                    parts.append(text)
                    yield text
        except BaseException as exc:  # the client left (cancelled, closed) or the backend failed
            status = "failed" if isinstance(exc, Exception) else "aborted"
            # Synchronous on purpose: awaiting is not safe in a cancelled or closing generator.
            self._record_unfinished(run, "".join(parts), count, status)
            raise
        if tail := remote.flush():
            parts.append(tail)
            yield tail
        run.answer = await asyncio.to_thread(self._finish, run, "".join(parts), count)

    async def complete(self, run: ChatRun) -> ChatAnswer:
        """Run a begun answer to its checked end, for replies that are not streamed."""
        async for _ in self.tokens(run):
            pass
        assert run.answer is not None
        return run.answer

    async def answer(self, messages: list[dict[str, str]], **kwargs: Any) -> ChatAnswer:
        return await self.complete(await self.begin(messages, **kwargs))

    def _finish(self, run: ChatRun, draft: str, token_count: int) -> ChatAnswer:
        generation = run.generation
        backend, model, skipped = generation.backend, generation.model, list(generation.skipped)
        text = clean_answer(draft, source_count=len(run.passages))
        evidence = " ".join([run.question, *(p.text for p in run.passages)])
        invented = ungrounded_numbers(text, evidence) if self.settings.grounding_check else []
        replaced = bool(invented) or not is_substantive(text)
        if replaced:
            reason = (
                f"answer stated numbers not in the sources: {', '.join(invented[:5])}"
                if invented
                else "answer said nothing of substance"
            )
            skipped.append({"backend": backend, "reason": reason})
            text, backend, model = extractive_answer(run.facts), "extractive", "extractive"
        else:
            text = attribute(text, run.passages, self.embedder)
            text = with_evidence(text, run.facts, self.settings.evidence_points)
        cited = set(cited_numbers(text))
        sources = [{**s, "cited": s["n"] in cited} for s in run.sources]
        answer = _answer_of(
            run,
            text,
            sources,
            token_count,
            model=model,
            backend=backend,
            skipped=skipped,
            tokens_in=sum(self.embedder.count_tokens(m["content"]) for m in run.request.messages),
            replaced=replaced,
        )
        self._record(run, answer)
        return answer

    def _record_unfinished(self, run: ChatRun, draft: str, token_count: int, status: str) -> None:
        """An answer that never finished is recorded too, as far as it got, marked with how
        it ended; it is not added to the conversation."""
        generation = run.generation
        answer = _answer_of(
            run,
            draft,
            run.sources,
            token_count,
            model=generation.model,
            backend=generation.backend,
            skipped=list(generation.skipped),
        )
        try:
            with write_session(self.engine) as session:
                session.add(self._metric(run, answer, status))
        except Exception:  # never mask why the stream ended
            log.exception("could not record an unfinished answer")

    def _record(self, run: ChatRun, answer: ChatAnswer) -> None:
        """The exchange (a new conversation, if needed) and the answer's record, in one
        transaction; the record's id becomes the answer's `answer_id`."""
        with write_session(self.engine) as session:
            if run.save and run.user_id is not None:
                if run.conversation_id is None:
                    title = title_from(run.question)
                    run.conversation_id = self.conversations.open(session, run.user_id, title).id
                    answer.conversation_id = run.conversation_id
                assert run.conversation_id is not None
                self.conversations.add_exchange(
                    session,
                    run.conversation_id,
                    run.question,
                    {
                        "response": answer.response,
                        "sources": answer.sources,
                        "backend": answer.backend,
                        "model": answer.model,
                        "metrics": answer.metrics(),
                    },
                )
            record = self._metric(run, answer, "done")
            session.add(record)
            session.flush()
            answer.answer_id = record.id

    @staticmethod
    def _metric(run: ChatRun, answer: ChatAnswer, status: str) -> AnswerMetric:
        return AnswerMetric(
            question=run.question,
            response=answer.response,
            chunks_used=answer.chunks_used,
            sources_json=json.dumps([s["source"] for s in answer.sources]),
            model=answer.model,
            backend=answer.backend,
            skipped_json=json.dumps(answer.skipped_backends),
            skill_level=answer.skill_level,
            latency_ms=answer.latency_ms,
            time_to_first_token_ms=answer.time_to_first_token_ms,
            tokens_in=answer.tokens_in,
            tokens_out=answer.tokens_out,
            api=run.api,
            user_id=run.user_id,
            conversation_id=run.conversation_id,
            status=status,
        )


def _answer_of(
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
    )


def answer_dict(answer: ChatAnswer) -> dict[str, Any]:
    return asdict(answer)


def stream_tail(draft: str, answer: ChatAnswer) -> str:
    """What a plain-text stream must add after the draft so the reader ends with the
    checked answer: the quoted evidence, or a visible correction when the draft was
    replaced. (The SSE API sends the final answer in its `done` event instead.)"""
    final = answer.response
    if answer.replaced:
        return (
            "\n\nCorrection: the draft above stated figures that are not in the sources. " + final
        )
    cleaned = clean_answer(draft, source_count=len(answer.sources))
    core = final.split("\n\nFrom the sources:")[0]
    evidence = final[len(core) :]
    return (core[len(cleaned) :] if core.startswith(cleaned) else "") + evidence
