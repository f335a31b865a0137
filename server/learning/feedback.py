"""Thumbs up or down on an answer, with an optional comment and tags. Only the person who
asked may rate: a signed-in asker by account, a guest by the answer's feedback token.
Anyone else is told the answer does not exist (404), so ids cannot be probed."""

from __future__ import annotations

import hmac
import json
from typing import Literal

from sqlalchemy import Engine
from sqlmodel import col, select

from server.accounts.security import token_hash
from server.db import AnswerMetric, Feedback, read_session, utcnow, write_session
from server.errors import NotFound

Rating = Literal["up", "down"]


def may_rate(record: AnswerMetric, *, user_id: int | None, token: str | None) -> bool:
    if record.user_id is not None:
        return user_id == record.user_id
    if not token or not record.feedback_token_hash:
        return False
    return hmac.compare_digest(token_hash(token), record.feedback_token_hash)


class FeedbackService:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def rate(
        self,
        answer_id: int,
        *,
        user_id: int | None,
        token: str | None,
        rating: Rating,
        comment: str | None = None,
        tags: list[str] | None = None,
    ) -> Feedback:
        """Record the asker's rating; rating again replaces the earlier one."""
        with write_session(self.engine) as session:
            record = session.get(AnswerMetric, answer_id)
            if record is None or not may_rate(record, user_id=user_id, token=token):
                raise NotFound("no such answer")
            row = session.exec(select(Feedback).where(Feedback.answer_id == answer_id)).first()
            row = row or Feedback(answer_id=answer_id, rating=rating)
            row.rating, row.comment = rating, (comment or None)
            row.tags_json = json.dumps(sorted(set(tags or [])))
            row.updated_at = utcnow()
            session.add(row)
            session.flush()
            session.refresh(row)
            return row

    def ratings(self, user_id: int, answer_ids: list[int]) -> dict[int, str]:
        """The user's own ratings of these answers, so a reloaded chat shows them."""
        if not answer_ids:
            return {}
        with read_session(self.engine) as session:
            rows = session.exec(
                select(Feedback.answer_id, Feedback.rating)
                .join(AnswerMetric, col(AnswerMetric.id) == Feedback.answer_id)
                .where(col(Feedback.answer_id).in_(answer_ids), AnswerMetric.user_id == user_id)
            ).all()
        return dict(rows)
