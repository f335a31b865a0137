"""The e-mail outbox: a mail is queued in the caller's transaction, then claimed, sent and
marked by a sender, one row at a time.

Exactly once, and the one place it cannot be:
- A mail is a row committed with the event that causes it (a user created, a webhook
  applied). A crash before that commit loses both, a crash after keeps both, and the unique
  dedupe key makes a redelivered webhook queue nothing new.
- A sender claims a row before it talks to SMTP: status `sending` and a lease until now +
  `mail_lease_s` (kept in `next_attempt_at`), in a transaction only one worker can win
  (PostgreSQL: `FOR UPDATE SKIP LOCKED`; SQLite: `BEGIN IMMEDIATE`). Two workers never send
  the same row, and a row is marked `sent` right after the server accepts it.
- SMTP has no idempotency. A `kill -9` between the server's "250 accepted" and our commit
  of `sent` (milliseconds) leaves a delivered mail in `sending`, and we cannot tell it from
  a crash before the server took it, which would lose the mail. So when the lease runs out
  the row is sent again: at least once in that window, never lost. The copy has the same
  Message-ID, so the receiving server or the mail client can drop it. The other choice, at
  most once (mark it failed for an admin), would lose a password reset on every crash in
  mid-connection, which is the likelier crash and the worse outcome.
"""

from __future__ import annotations

import logging
import secrets
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parseaddr

from sqlalchemy import Engine, event, func
from sqlmodel import Session, col, select

from server.config import Settings
from server.db import MailOutbox, is_sqlite, read_session, utcnow, write_session
from server.notify.messages import Mail

log = logging.getLogger(__name__)

STATUSES = ("pending", "sending", "sent", "failed")
SECRET_KINDS = {"password_reset"}  # their body holds a one-time link: emptied once done
MAX_RETRY_WAIT_S = 3600.0
_REDACTED = "(removed: it held a one-time link)"


@dataclass(frozen=True)
class MailConfig:
    """The few settings the outbox and its mails use."""

    enabled: bool
    sender: str
    public_url: str
    retry_s: float = 60.0
    max_attempts: int = 10
    lease_s: float = 600.0

    @classmethod
    def from_settings(cls, settings: Settings) -> MailConfig:
        return cls(
            enabled=settings.mail_enabled,
            sender=settings.smtp_from or "",
            public_url=settings.public_url.rstrip("/"),
            retry_s=settings.mail_retry_s,
            max_attempts=settings.mail_max_attempts,
            lease_s=settings.mail_lease_s,
        )

    @property
    def domain(self) -> str:
        address = parseaddr(self.sender)[1]
        return address.rpartition("@")[2] or "rodeoai.invalid"


@dataclass(frozen=True)
class Claimed:
    """A row this sender holds the lease on."""

    id: int
    owner: str
    kind: str
    recipient: str
    subject: str
    body: str
    message_id: str
    attempts: int


def as_utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _one_line(text: str, limit: int) -> str:
    return " ".join(text.split())[:limit]


def deliverable(address: str) -> bool:
    """An address a mail can go to: not a placeholder (OAuth users without an e-mail get
    `...@users.noreply.invalid`) and nothing that could smuggle a header."""
    return (
        "@" in address
        and not address.endswith(".invalid")
        and not any(c in address for c in "\r\n,;<>")
    )


class Outbox:
    def __init__(self, engine: Engine, config: MailConfig) -> None:
        self.engine = engine
        self.config = config
        self.wake = threading.Event()  # set after a commit that queued mail: send it now

    @property
    def enabled(self) -> bool:
        return self.config.enabled

    # --- queueing, inside the caller's transaction -----------------------------------------
    def enqueue(
        self,
        session: Session,
        mail: Mail,
        *,
        key: str,
        to: str,
        expires_at: datetime | None = None,
    ) -> bool:
        """Queue a mail in `session`'s transaction (a write_session: its write lock makes the
        dedupe check safe). False when e-mail is off, the address cannot receive, or a mail
        with this key was queued before."""
        if not self.enabled or not deliverable(to):
            return False
        if session.exec(select(MailOutbox.id).where(MailOutbox.dedupe_key == key)).first():
            return False
        row = MailOutbox(
            dedupe_key=key[:200],
            kind=mail.kind,
            recipient=to,
            subject=_one_line(mail.subject, 200),
            body=mail.body,
            message_id="",
            expires_at=expires_at,
        )
        session.add(row)
        session.flush()
        # Stable across attempts: derived from the row, plus a salt so a rebuilt database
        # that reuses ids never repeats a Message-ID a receiver has already seen.
        row.message_id = f"<mail.{row.id}.{secrets.token_hex(6)}@{self.config.domain}>"
        session.add(row)
        event.listen(session, "after_commit", self._after_commit, once=True)
        return True

    def _after_commit(self, _session: Session) -> None:
        self.wake.set()

    # --- claiming and marking -------------------------------------------------------------
    @contextmanager
    def _locked(self) -> Iterator[Session]:
        """SQLite: BEGIN IMMEDIATE (one writer). PostgreSQL: row locks only, not the global
        writer lock, so idle polling from every worker never queues behind real writes."""
        if is_sqlite(self.engine):
            with write_session(self.engine) as session:
                yield session
            return
        with Session(self.engine, expire_on_commit=False) as session:
            yield session
            session.commit()

    def claim(self, *, now: datetime | None = None) -> Claimed | None:
        """The next due mail, leased to this caller; None when nothing is due. Rows past
        their expiry or their attempts are closed on the way."""
        now = now or utcnow()
        while True:
            with self._locked() as session:
                row = session.exec(
                    select(MailOutbox)
                    .where(
                        col(MailOutbox.status).in_(("pending", "sending")),
                        col(MailOutbox.next_attempt_at) <= now,
                    )
                    .order_by(col(MailOutbox.next_attempt_at), col(MailOutbox.id))
                    .limit(1)
                    .with_for_update(skip_locked=True)
                ).first()
                if row is None:
                    return None
                if row.status == "sending":  # its lease ran out: that sender died mid-send
                    log.warning("mail %s: its sender stopped while sending; trying again", row.id)
                    row.last_error = "the sender stopped while sending it (crash or restart)"
                if row.expires_at is not None and as_utc(row.expires_at) <= now:
                    self._close(row, "expired before it could be sent")
                elif row.attempts >= self.config.max_attempts:
                    self._close(row, row.last_error or "out of attempts")
                else:
                    row.status, row.lease_owner = "sending", uuid.uuid4().hex
                    row.attempts += 1
                    row.next_attempt_at = now + timedelta(seconds=self.config.lease_s)
                    session.add(row)
                    return self._claimed(row)
                session.add(row)

    @staticmethod
    def _claimed(row: MailOutbox) -> Claimed:
        assert row.id is not None and row.lease_owner is not None
        return Claimed(
            id=row.id,
            owner=row.lease_owner,
            kind=row.kind,
            recipient=row.recipient,
            subject=row.subject,
            body=row.body,
            message_id=row.message_id,
            attempts=row.attempts,
        )

    @staticmethod
    def _close(row: MailOutbox, error: str) -> None:
        row.status, row.lease_owner, row.last_error = "failed", None, error[:500]
        if row.kind in SECRET_KINDS:
            row.body = _REDACTED
        log.warning("mail %s (%s) failed for good: %s", row.id, row.kind, row.last_error)

    def sent(self, mail: Claimed, *, now: datetime | None = None) -> None:
        """The server took it. Marked whoever holds the lease now: it was sent either way,
        and no later claim may send it again."""
        with self._locked() as session:
            row = session.get(MailOutbox, mail.id, with_for_update=True)
            if row is None or row.status == "sent":
                return
            row.status, row.lease_owner, row.last_error = "sent", None, None
            row.sent_at = now or utcnow()
            if row.kind in SECRET_KINDS:
                row.body = _REDACTED
            session.add(row)

    def failed(
        self, mail: Claimed, error: str, *, permanent: bool = False, now: datetime | None = None
    ) -> str:
        """The server did not take it: try again after a doubling wait, or close it for the
        admin (a permanent refusal, or the last attempt). Returns the row's new status."""
        now = now or utcnow()
        with self._locked() as session:
            row = session.get(MailOutbox, mail.id, with_for_update=True)
            if row is None or row.status != "sending" or row.lease_owner != mail.owner:
                return row.status if row else "gone"  # another claim holds it now
            row.last_error = error[:500]
            if permanent or row.attempts >= self.config.max_attempts:
                self._close(row, row.last_error)
            else:
                cap = max(MAX_RETRY_WAIT_S, self.config.retry_s)
                wait = min(self.config.retry_s * 2 ** (row.attempts - 1), cap)
                row.status, row.lease_owner = "pending", None
                row.next_attempt_at = now + timedelta(seconds=wait)
                log.info("mail %s: attempt %d failed (%s)", row.id, row.attempts, row.last_error)
            session.add(row)
            return row.status

    # --- reading ----------------------------------------------------------------------
    def next_due(self) -> datetime | None:
        """When the next mail (or lease) falls due; a read, so idle polling takes no lock."""
        with read_session(self.engine) as session:
            due = session.exec(
                select(func.min(MailOutbox.next_attempt_at)).where(
                    col(MailOutbox.status).in_(("pending", "sending"))
                )
            ).one()
        return as_utc(due) if due else None

    def rows(
        self, *, status: str | None = None, offset: int = 0, limit: int = 50
    ) -> list[MailOutbox]:
        """Newest first, for the admin."""
        query = select(MailOutbox).order_by(col(MailOutbox.id).desc())
        if status:
            query = query.where(MailOutbox.status == status)
        with read_session(self.engine) as session:
            return list(session.exec(query.offset(offset).limit(limit)).all())
