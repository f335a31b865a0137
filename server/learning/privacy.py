"""What the learning loop keeps, and for how long: recorded answers older than the
retention period are deleted (their feedback and reviews with them, by cascade), and a
signed-in user can delete every answer recorded for them. Conversations are the user's
own history and are not touched here."""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import ColumnElement, Engine, delete
from sqlmodel import col, select

from server.db import AnswerMetric, utcnow, write_session

log = logging.getLogger(__name__)
BATCH = 500  # rows per transaction, so a large purge never holds the write lock for long


class AnswerPrivacy:
    def __init__(self, engine: Engine, retention_days: int) -> None:
        self.engine = engine
        self.retention_days = retention_days

    def purge_expired(self) -> int:
        """Delete answers past the retention period (0 days keeps everything)."""
        if self.retention_days <= 0:
            return 0
        cutoff = utcnow() - timedelta(days=self.retention_days)
        deleted = self._delete_where(col(AnswerMetric.created_at) < cutoff)
        if deleted:
            log.info("deleted %d answers older than %d days", deleted, self.retention_days)
        return deleted

    def delete_own(self, user_id: int) -> int:
        return self._delete_where(col(AnswerMetric.user_id) == user_id)

    def _delete_where(self, condition: ColumnElement[bool]) -> int:
        total = 0
        while True:
            with write_session(self.engine) as session:
                ids = session.exec(select(AnswerMetric.id).where(condition).limit(BATCH)).all()
                if not ids:
                    return total
                session.exec(delete(AnswerMetric).where(col(AnswerMetric.id).in_(ids)))
                total += len(ids)
