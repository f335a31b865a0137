"""Answering: retrieve -> pick facts -> prompt -> generate (streamed) -> check -> cite -> record.

Every API (REST, SSE, WebSocket, OpenAI- and Ollama-compatible) runs through `ChatService`,
so every answer gets the same grounding, citations and metrics.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from sqlalchemy import Engine

from server.accounts.service import Principal
from server.billing.plans import BillingService
from server.chat.answers import ChatAnswer, ChatRun, answer_of
from server.chat.conversations import ConversationStore
from server.chat.prompting import (
    attribute,
    build_messages,
    fit_passages,
    select_facts,
    trim_history,
    with_evidence,
)
from server.chat.recording import AnswerObserver, AnswerRecorder
from server.chat.support import Checked, SupportCheck
from server.chat.variants import DEFAULT, ChatVariant, VariantPicker, subject_of
from server.config import Settings, SkillLevel
from server.errors import InvalidInput
from server.llm.base import GenerationRequest, Passage
from server.llm.chain import FailoverChain
from server.llm.cleanup import cited_numbers, clean_answer, is_substantive
from server.llm.extractive import extractive_answer
from server.llm.remote import StreamFilter
from server.rag.embedder import Embedder
from server.rag.loaders import clean_text
from server.rag.retriever import Hit, Retriever

log = logging.getLogger(__name__)
PREMIUM_BACKENDS = frozenset({"openai"})  # cloud models: Pro plans only


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
        variants: VariantPicker | None = None,
        answer_observers: list[AnswerObserver] | None = None,
        cut: Callable[[], bool] = lambda: False,
    ) -> None:
        self.retriever = retriever
        self.chain = chain
        self.embedder = embedder
        self.settings = settings
        self.engine = engine
        self.conversations = conversations
        self.billing = billing
        self.variants = variants
        self.recorder = AnswerRecorder(engine, conversations, answer_observers)
        self.support = SupportCheck(embedder)
        self.cut = cut  # a graceful shutdown's deadline has passed: end answers where they are

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

    async def begin_for(
        self,
        principal: Principal,
        messages: list[dict[str, str]],
        *,
        skill_level: SkillLevel | None = None,
        conversation_id: int | None = None,
        save: bool = False,
        api: str = "chat",
    ) -> ChatRun:
        """`begin` for a caller: the depth asked for, else the user's profile, else the box's
        default; billed to, and recorded for, the signed-in user or the guest."""
        user = principal.user  # a profile holds a valid level (the API checks it)
        level = (
            skill_level or (user.skill_level if user else None) or self.settings.default_skill_level
        )
        return await self.begin(
            messages,
            skill_level=level,  # type: ignore[arg-type]
            user_id=user.id if user else None,
            conversation_id=conversation_id,
            save=save,
            api=api,
            guest_key=principal.guest_key,
        )

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
        variant: ChatVariant | None = None,
        trial: bool = False,
    ) -> ChatRun:
        """Everything up to the first token, so overload (503) and bad input (4xx) are known
        before a streaming response starts. With `save`, a signed-in user's exchange is
        stored in `conversation_id` (which must be theirs) or in a new conversation.

        `variant` overrides the experiment's choice. A `trial` (the operator's offline
        evaluation, from the shell) is neither billed nor recorded."""
        started = time.monotonic()
        question, history = self.validate(messages)
        if conversation_id is not None:
            if user_id is None:
                raise InvalidInput("sign in to continue a conversation", code="sign_in_required")
            self.conversations.get(user_id, conversation_id)  # 404 unless it is theirs
            history = self.conversations.history(conversation_id)
        # Paid for before any work, so concurrent questions cannot overspend; given back if
        # no answer starts. The plan's tier decides which backends may answer.
        debit = (
            None
            if trial
            else await asyncio.to_thread(self.billing.debit_message, user_id, guest_key)
        )
        variant = variant or self._variant(user_id, guest_key)
        try:
            request, hits, passages, facts = await self._prepare(
                question, history, skill_level, max_tokens, variant
            )
            generation = await self.chain.start(
                request,
                exclude=PREMIUM_BACKENDS
                if debit is not None and debit.plan.tier == "local"
                else frozenset(),
                prefer=variant.backend,
            )
        except BaseException:  # busy, every backend down, no index, client gone
            if debit is not None:
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
            variant=variant,
            recorded=not trial,
        )

    def _variant(self, user_id: int | None, guest_key: str | None) -> ChatVariant:
        """The asker's experiment variant; a broken experiment never stops an answer."""
        if self.variants is None:
            return DEFAULT
        try:
            return self.variants.pick(subject_of(user_id, guest_key))
        except Exception:
            log.exception("could not pick an experiment variant; answering with the default")
            return DEFAULT

    async def _prepare(
        self,
        question: str,
        history: list[dict[str, str]],
        skill_level: SkillLevel,
        max_tokens: int | None,
        variant: ChatVariant = DEFAULT,
    ) -> tuple[GenerationRequest, list[Hit], list[Passage], list[tuple[int, str]]]:
        """Retrieve, pick the facts and build the prompt."""
        query = question
        if history and len(question.split()) < 6:  # "what about heelers?" needs its context
            last_user = next((m["content"] for m in reversed(history) if m["role"] == "user"), "")
            query = f"{last_user} {question}"
        hits = await asyncio.to_thread(
            self.retriever.search, query, variant.top_k or self.settings.top_k, variant.retrieval
        )
        passages = fit_passages(hits, self.embedder, self.settings.context_token_budget)
        facts = await asyncio.to_thread(
            select_facts, question, passages, self.embedder, self.settings.facts_in_prompt
        )
        budget = self.settings.history_token_budget * 4  # about four characters a token
        request = GenerationRequest(
            messages=build_messages(
                question,
                facts,
                skill_level,
                trim_history(history, max_chars=budget),
                variant.prompt_style,
            ),
            question=question,
            passages=passages,
            facts=facts,
            max_tokens=min(
                max_tokens or self.settings.llm_max_tokens, self.settings.llm_max_tokens
            ),
            temperature=self.settings.llm_temperature,
            timeout_s=self.settings.generation_timeout_s,
            models={variant.backend: variant.model} if variant.backend and variant.model else {},
        )
        return request, hits, passages, facts

    async def tokens(self, run: ChatRun) -> AsyncIterator[str]:
        """Stream the draft, then settle the final answer on `run.answer` and record it."""
        parts: list[str] = []
        count = 0
        remote = StreamFilter()  # the draft is shown as it streams, so filter it as it goes
        stream = run.generation.tokens
        try:
            async for token in stream:
                count += 1
                text = remote.feed(token)
                if text:
                    parts.append(text)
                    yield text
                if self.cut():
                    await _close(stream)  # frees the model's slot now
                    run.generation.skipped.append(
                        {
                            "backend": run.generation.backend,
                            "reason": f"cut short after {count} tokens: the server was "
                            "shutting down",
                        }
                    )
                    break
        except BaseException as exc:  # the client left (cancelled, closed) or the backend failed
            status = "failed" if isinstance(exc, Exception) else "aborted"
            # Synchronous on purpose: awaiting is not safe in a cancelled or closing generator.
            self.recorder.unfinished(run, "".join(parts), count, status)
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
        # The extractive backend quotes the facts; everything else must show its support.
        checked = (
            self.support.check(text, run.facts, run.question, _context(run.passages))
            if self.settings.grounding_check and backend != "extractive"
            else Checked(text)
        )
        dropped = [{"sentence": v.sentence, "reason": v.reason or ""} for v in checked.dropped]
        skipped += [
            {"backend": backend, "reason": f"dropped {d['sentence']!r}: {d['reason']}"}
            for d in dropped
        ]
        replaced = not is_substantive(checked.text)
        if replaced:
            reason = (
                "no sentence of the answer was supported by the sources"
                if dropped
                else "answer said nothing of substance"
            )
            skipped.append({"backend": backend, "reason": reason})
            text, backend, model = extractive_answer(run.facts), "extractive", "extractive"
        else:
            text = attribute(checked.text, run.passages, self.embedder)
            text = with_evidence(text, run.facts, self.settings.evidence_points)
        cited = set(cited_numbers(text))
        sources = [{**s, "cited": s["n"] in cited} for s in run.sources]
        answer = answer_of(
            run,
            text,
            sources,
            token_count,
            model=model,
            backend=backend,
            skipped=skipped,
            tokens_in=sum(self.embedder.count_tokens(m["content"]) for m in run.request.messages),
            replaced=replaced,
            dropped=dropped,
        )
        self.recorder.finished(run, answer)
        return answer


async def _close(stream: AsyncIterator[str]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()


def _context(passages: list[Passage]) -> str:
    return " ".join(p.text for p in passages)
