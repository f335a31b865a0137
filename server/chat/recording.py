"""Every answer is recorded, whichever API asked: finished answers with their exchange in
one transaction (the record's id is the answer's `answer_id`), and unfinished ones as far
as they got, marked aborted or failed. The learning loop reads these records."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from sqlalchemy import Engine

from server.accounts.security import new_secret, token_hash
from server.chat.answers import ChatAnswer, ChatRun, answer_of
from server.chat.conversations import ConversationStore, title_from
from server.db import AnswerMetric, write_session

log = logging.getLogger(__name__)

# Told of each answer record once it is stored (the Prometheus metrics count answers this
# way); the recorder never learns who listens.
AnswerObserver = Callable[[AnswerMetric], None]


class AnswerRecorder:
    def __init__(
        self,
        engine: Engine,
        conversations: ConversationStore,
        observers: list[AnswerObserver] | None = None,
    ) -> None:
        self.engine = engine
        self.conversations = conversations
        self.observers = observers if observers is not None else []

    def finished(self, run: ChatRun, answer: ChatAnswer) -> None:
        """The exchange (a new conversation, if needed) and the answer's record, in one
        transaction; the record's id becomes the answer's `answer_id`."""
        if not run.recorded:
            return
        with write_session(self.engine) as session:
            record = metric(run, answer, "done")
            if run.user_id is None:  # a guest rates this answer with a token only they hold
                answer.feedback_token = new_secret("fb_")
                record.feedback_token_hash = token_hash(answer.feedback_token)
            session.add(record)
            session.flush()
            answer.answer_id = record.id
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
                        # The saved message keeps its answer's id, so a reloaded chat
                        # can still be rated.
                        "metrics": {**answer.metrics(), "answer_id": record.id},
                    },
                )
                record.conversation_id = run.conversation_id
        self._notify(record)  # after the commit: only stored answers are counted

    def unfinished(self, run: ChatRun, draft: str, token_count: int, status: str) -> None:
        """An answer that never finished is recorded too, as far as it got, marked with how
        it ended; it is not added to the conversation."""
        if not run.recorded:
            return
        generation = run.generation
        answer = answer_of(
            run,
            draft,
            run.sources,
            token_count,
            model=generation.model,
            backend=generation.backend,
            skipped=list(generation.skipped),
        )
        record = metric(run, answer, status)
        try:
            with write_session(self.engine) as session:
                session.add(record)
        except Exception:  # never mask why the stream ended
            log.exception("could not record an unfinished answer")
            return
        self._notify(record)

    def _notify(self, record: AnswerMetric) -> None:
        for observer in self.observers:
            try:
                observer(record)
            except Exception:  # a listener's fault never costs an answer
                log.exception("an answer observer failed")


def metric(run: ChatRun, answer: ChatAnswer, status: str) -> AnswerMetric:
    return AnswerMetric(
        question=run.question,
        response=answer.response,
        chunks_used=answer.chunks_used,
        # Whole sources, scores included: review orders answers by how well retrieval did.
        sources_json=json.dumps(answer.sources),
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
        experiment_id=run.variant.experiment_id,
        variant=run.variant.name if run.variant.experiment_id is not None else None,
    )
