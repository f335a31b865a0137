"""Expert review: a queue of answers ordered by need, and each expert's verdict.

Need, in order: answers the asker marked thumbs-down; then the weakest retrieval (the best
source's score, lowest first); then the oldest. Reviewed answers leave the queue."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import Engine
from sqlmodel import col, func, select

from server.db import AnswerMetric, Feedback, Review, User, read_session, write_session
from server.errors import NotFound

# Candidates read per queue request, oldest first; ordering by need happens among them.
CANDIDATES = 2000


def recorded_sources(sources_json: str) -> list[dict[str, Any]]:
    """Records before the learning loop kept source names only; later ones whole sources."""
    return [s if isinstance(s, dict) else {"source": s} for s in json.loads(sources_json or "[]")]


def top_score(sources_json: str) -> float:
    scores = [float(s.get("score") or 0) for s in recorded_sources(sources_json)]
    return max(scores, default=0.0)


def _item(record: AnswerMetric, feedback: Feedback | None) -> dict[str, Any]:
    return {
        "answer_id": record.id,
        "question": record.question,
        "response": record.response,
        "sources": recorded_sources(record.sources_json),
        "model": record.model,
        "backend": record.backend,
        "skill_level": record.skill_level,
        "top_score": round(top_score(record.sources_json), 6),
        "created_at": record.created_at,
        "feedback": None
        if feedback is None
        else {
            "rating": feedback.rating,
            "comment": feedback.comment,
            "tags": json.loads(feedback.tags_json),
        },
    }


class ReviewService:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def queue(self, *, limit: int = 50) -> list[dict[str, Any]]:
        reviewed = select(Review.answer_id)
        with read_session(self.engine) as session:
            rows = session.exec(
                select(AnswerMetric, Feedback)
                .join(Feedback, col(Feedback.answer_id) == AnswerMetric.id, isouter=True)
                .where(AnswerMetric.status == "done", col(AnswerMetric.id).not_in(reviewed))
                .order_by(col(AnswerMetric.created_at), col(AnswerMetric.id))
                .limit(CANDIDATES)
            ).all()

        def need(row: tuple[AnswerMetric, Feedback | None]) -> tuple[int, float, datetime, int]:
            record, feedback = row
            down = 0 if feedback is not None and feedback.rating == "down" else 1
            return (down, top_score(record.sources_json), record.created_at, record.id or 0)

        return [_item(record, feedback) for record, feedback in sorted(rows, key=need)[:limit]]

    def submit(
        self,
        answer_id: int,
        *,
        reviewer_id: int,
        rating: int,
        corrected_answer: str | None = None,
        knowledge_gap: str | None = None,
        note: str | None = None,
    ) -> Review:
        with write_session(self.engine) as session:
            if session.get(AnswerMetric, answer_id) is None:
                raise NotFound("no such answer")
            review = Review(
                answer_id=answer_id,
                reviewer_id=reviewer_id,
                rating=rating,
                corrected_answer=corrected_answer or None,
                knowledge_gap=knowledge_gap or None,
                note=note or None,
            )
            session.add(review)
            session.flush()
            session.refresh(review)
            return review

    def activity(self) -> list[dict[str, Any]]:
        """Each reviewer's count of reviews and their latest, for administrators."""
        with read_session(self.engine) as session:
            rows = session.exec(
                select(User.email, func.count(col(Review.id)), func.max(Review.created_at))
                .join(User, col(User.id) == Review.reviewer_id)
                .group_by(User.email)
                .order_by(func.count(col(Review.id)).desc())
            ).all()
        return [{"reviewer": e, "reviews": n, "latest": latest} for e, n, latest in rows]
