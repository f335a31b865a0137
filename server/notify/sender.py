"""The sender: one thread per worker that claims due mail from the outbox and sends it.

It wakes when a mail queued in this worker commits, when the next retry falls due, and
every `mail_poll_s` for mail queued by other workers or processes (the CLI, another
replica). Every worker may run one: the claim lets exactly one of them send each row.
"""

from __future__ import annotations

import logging
import smtplib
import threading
import time
from collections.abc import Callable
from datetime import datetime

from server.db import utcnow
from server.notify.outbox import MAX_RETRY_WAIT_S, Claimed, Outbox
from server.notify.smtp import SmtpTransport, close, describe, permanent

log = logging.getLogger(__name__)
# The server refused this one mail and said so; the connection is still good for the next.
_MESSAGE_ERRORS = (smtplib.SMTPRecipientsRefused, smtplib.SMTPDataError)


class MailSender:
    def __init__(
        self,
        outbox: Callable[[], Outbox],
        transport: SmtpTransport,
        *,
        poll_s: float = 5.0,
        after: threading.Event | None = None,
    ) -> None:
        """`outbox` is called once the `after` event is set (the app's loader has opened
        the database by then), so the engine is never built by two threads at once."""
        self._outbox_factory = outbox
        self._outbox: Outbox | None = None
        self.transport = transport
        self.poll_s = poll_s
        self.after = after
        self.stopping = threading.Event()
        self.outage = 0  # passes in a row that could not reach the server
        self._thread: threading.Thread | None = None

    @property
    def outbox(self) -> Outbox:
        if self._outbox is None:
            self._outbox = self._outbox_factory()
        return self._outbox

    # --- the thread -------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="mail-sender", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the mail in hand and stop. A mail cut off here stays `sending` until its
        lease runs out, then goes again (see outbox.py)."""
        self.stopping.set()
        if self._outbox is not None:
            self._outbox.wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while self.after is not None and not self.after.wait(0.5):
            if self.stopping.is_set():
                return
        while not self.stopping.is_set():
            try:
                outbox = self.outbox
                self.run_once()
                wait = self._until_next(outbox)
            except Exception:  # the database: log, then try again later
                log.exception("the mail sender failed; retrying in %.0f s", self.poll_s)
                self.stopping.wait(self.poll_s)
                continue
            if self.outage:  # the server is down: back off, new mail or not
                self.stopping.wait(wait)
            elif outbox.wake.wait(wait):
                outbox.wake.clear()

    def _until_next(self, outbox: Outbox) -> float:
        if self.outage:
            retry_s = outbox.config.retry_s
            return min(retry_s * 2 ** (self.outage - 1), max(MAX_RETRY_WAIT_S, retry_s))
        due = outbox.next_due()
        if due is None:
            return self.poll_s
        return max(0.0, min(self.poll_s, (due - utcnow()).total_seconds()))

    # --- one pass ---------------------------------------------------------------------
    def run_once(self, *, now: datetime | None = None) -> int:
        """Send every mail due now over one connection; returns how many the server took."""
        sent = 0
        connection: smtplib.SMTP | None = None
        try:
            while not self.stopping.is_set():
                mail = self.outbox.claim(now=now)
                if mail is None:
                    break
                try:
                    if connection is None:
                        connection = self.transport.connect()
                        self.outage = 0
                    self.transport.send(connection, mail)
                except Exception as exc:
                    self._failed(mail, exc, now)
                    if isinstance(exc, _MESSAGE_ERRORS):
                        continue
                    # No server, a bad login, a broken connection: the rest wait for a
                    # later pass (after a doubling pause), spending no attempts now.
                    close(connection)
                    connection = None
                    self.outage += 1
                    break
                self._mark_sent(mail, now)
                sent += 1
        finally:
            close(connection)
        return sent

    def _mark_sent(self, mail: Claimed, now: datetime | None) -> None:
        """Marked the moment the server took it: the crash window outbox.py describes, as
        short as one commit. A database hiccup here is retried, since a row left `sending`
        would be sent again when its lease ends."""
        for attempt in range(1, 4):
            try:
                self.outbox.sent(mail, now=now)
                return
            except Exception:
                if attempt == 3:
                    raise
                log.warning("mail %s was sent but not yet marked; trying again", mail.id)
                time.sleep(attempt)

    def _failed(self, mail: Claimed, exc: Exception, now: datetime | None) -> None:
        error = describe(exc)
        status = self.outbox.failed(mail, error, permanent=permanent(exc), now=now)
        log.warning("mail %s (%s) was not sent, now %s: %s", mail.id, mail.kind, status, error)
