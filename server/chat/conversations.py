"""Saved conversations. Every read or write takes the owner, so another user's id is 404."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Engine, func, or_
from sqlmodel import Session, col, select

from server.db import Conversation, Message, read_session, utcnow, write_session
from server.errors import NotFound


def title_from(question: str, limit: int = 60) -> str:
    text = " ".join(question.split())
    return text if len(text) <= limit else text[: limit - 1].rsplit(" ", 1)[0] + "..."


class ConversationStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(self, user_id: int, title: str) -> Conversation:
        with write_session(self.engine) as session:
            conversation = self.open(session, user_id, title)
            session.refresh(conversation)
        return conversation

    @staticmethod
    def open(session: Session, user_id: int, title: str) -> Conversation:
        """A new conversation inside the caller's transaction."""
        conversation = Conversation(user_id=user_id, title=title)
        session.add(conversation)
        session.flush()
        return conversation

    def get(self, user_id: int, conversation_id: int) -> Conversation:
        with read_session(self.engine) as session:
            conversation = session.get(Conversation, conversation_id)
        if conversation is None or conversation.user_id != user_id:
            raise NotFound("no such conversation")
        return conversation

    def list_for(
        self, user_id: int, *, offset: int, limit: int, query: str | None = None
    ) -> tuple[list[Conversation], int]:
        """Newest first. A query matches titles and message text."""
        condition = Conversation.user_id == user_id
        statement = select(Conversation).where(condition)
        counter = select(func.count()).select_from(Conversation).where(condition)
        if query:
            pattern = f"%{query.strip()}%"
            matching = select(Message.conversation_id).where(col(Message.content).ilike(pattern))
            found = or_(col(Conversation.title).ilike(pattern), col(Conversation.id).in_(matching))
            statement, counter = statement.where(found), counter.where(found)
        with read_session(self.engine) as session:
            rows = session.exec(
                statement.order_by(col(Conversation.updated_at).desc(), col(Conversation.id).desc())
                .offset(offset)
                .limit(limit)
            ).all()
            total = session.exec(counter).one()
        return list(rows), int(total)

    def rename(self, user_id: int, conversation_id: int, title: str) -> Conversation:
        with write_session(self.engine) as session:
            conversation = session.get(Conversation, conversation_id)
            if conversation is None or conversation.user_id != user_id:
                raise NotFound("no such conversation")
            conversation.title = title.strip()[:200]
            conversation.updated_at = utcnow()
            session.add(conversation)
        return conversation

    def delete(self, user_id: int, conversation_id: int) -> None:
        with write_session(self.engine) as session:
            conversation = session.get(Conversation, conversation_id)
            if conversation is None or conversation.user_id != user_id:
                raise NotFound("no such conversation")
            session.delete(conversation)  # messages follow by cascade

    def messages(self, conversation_id: int) -> list[Message]:
        with read_session(self.engine) as session:
            return list(
                session.exec(
                    select(Message)
                    .where(Message.conversation_id == conversation_id)
                    .order_by(col(Message.id))
                ).all()
            )

    def history(self, conversation_id: int) -> list[dict[str, str]]:
        return [{"role": m.role, "content": m.content} for m in self.messages(conversation_id)]

    @staticmethod
    def add_exchange(
        session: Session, conversation_id: int, question: str, answer: dict[str, Any]
    ) -> None:
        """The question and its answer, in the caller's transaction (with the answer's
        record), so they are stored together or not at all."""
        session.add(Message(conversation_id=conversation_id, role="user", content=question))
        session.add(
            Message(
                conversation_id=conversation_id,
                role="assistant",
                content=answer["response"],
                sources_json=json.dumps(answer["sources"]),
                backend=answer["backend"],
                model=answer["model"],
                metrics_json=json.dumps(answer["metrics"]),
            )
        )
        conversation = session.get(Conversation, conversation_id)
        if conversation:
            conversation.updated_at = utcnow()
            session.add(conversation)
