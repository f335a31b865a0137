"""Answer retention (learning-loop issue, item 10): answers past RODEOAI_ANSWER_RETENTION_DAYS
are deleted with their feedback and reviews (the cascade, on both engines); 0 keeps all."""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import func, select

from server.db import AnswerMetric, Feedback, Review, User, make_engine, utcnow, write_session
from server.learning.privacy import AnswerPrivacy
from tests.conftest import MakeSettings


def _answer(session: object, age_days: int) -> int:
    row = AnswerMetric(
        question="q",
        response="r",
        chunks_used=1,
        model="m",
        backend="extractive",
        skill_level="beginner",
        latency_ms=1,
        created_at=utcnow() - timedelta(days=age_days),
    )
    session.add(row)  # type: ignore[attr-defined]
    session.flush()  # type: ignore[attr-defined]
    assert row.id is not None
    return row.id


def test_retention_deletes_old_answers_with_their_feedback_and_reviews(
    make_settings: MakeSettings,
) -> None:
    engine = make_engine(make_settings().engine_url)
    with write_session(engine) as session:
        expert = User(email="vet@example.com", role="expert")
        session.add(expert)
        session.flush()
        old = [_answer(session, 40 + n) for n in range(3)]
        fresh = _answer(session, 5)
        for answer_id in (old[0], fresh):
            session.add(Feedback(answer_id=answer_id, rating="down"))
            session.add(Review(answer_id=answer_id, reviewer_id=expert.id, rating=2))

    assert AnswerPrivacy(engine, 0).purge_expired() == 0  # 0 keeps everything
    assert AnswerPrivacy(engine, 30).purge_expired() == 3
    with write_session(engine) as session:
        left = session.exec(select(AnswerMetric.id)).all()
        assert left == [fresh]
        for table in (Feedback, Review):
            answers = session.exec(select(table.answer_id)).all()  # type: ignore[attr-defined]
            assert answers == [fresh]
        assert session.exec(select(func.count()).select_from(User)).one() == 1
    assert AnswerPrivacy(engine, 30).purge_expired() == 0  # idempotent
    engine.dispose()
