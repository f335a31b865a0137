"""Sending through SMTP with the standard library: plain, STARTTLS or TLS from the start, an
optional login, and a verdict on each failure (worth retrying, or final)."""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, parseaddr

from server.config import Settings
from server.notify.outbox import Claimed

DEFAULT_PORTS = {"ssl": 465, "starttls": 587, "none": 25}


class SmtpTransport:
    def __init__(
        self,
        *,
        host: str,
        port: int | None = None,
        tls: str = "starttls",
        username: str | None = None,
        password: str | None = None,
        sender: str,
        timeout_s: float = 30.0,
    ) -> None:
        self.host = host
        self.port = port or DEFAULT_PORTS[tls]
        self.tls = tls
        self.username = username
        self._password = password  # never logged, never in an error message
        self.sender = sender
        self.timeout_s = timeout_s

    @classmethod
    def from_settings(cls, settings: Settings) -> SmtpTransport:
        password = settings.smtp_password
        return cls(
            host=settings.smtp_host or "",
            port=settings.smtp_port,
            tls=settings.smtp_tls,
            username=settings.smtp_username,
            password=password.get_secret_value() if password else None,
            sender=settings.smtp_from or "",
            timeout_s=settings.smtp_timeout_s,
        )

    def connect(self) -> smtplib.SMTP:
        """An open, greeted (and, as configured, encrypted and signed-in) connection."""
        context = ssl.create_default_context()
        connection: smtplib.SMTP
        if self.tls == "ssl":
            connection = smtplib.SMTP_SSL(
                self.host, self.port, timeout=self.timeout_s, context=context
            )
        else:
            connection = smtplib.SMTP(self.host, self.port, timeout=self.timeout_s)
        try:
            connection.ehlo()
            if self.tls == "starttls":
                connection.starttls(context=context)
                connection.ehlo()
            if self.username:
                connection.login(self.username, self._password or "")
        except BaseException:
            close(connection)
            raise
        return connection

    def message(self, mail: Claimed) -> EmailMessage:
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = mail.recipient
        message["Subject"] = mail.subject
        message["Date"] = formatdate(localtime=False)
        message["Message-ID"] = mail.message_id
        message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to us
        message.set_content(mail.body)
        return message

    def send(self, connection: smtplib.SMTP, mail: Claimed) -> None:
        connection.send_message(
            self.message(mail), from_addr=parseaddr(self.sender)[1], to_addrs=[mail.recipient]
        )


def permanent(exc: Exception) -> bool:
    """A refusal that retrying cannot change: the server rejected this recipient or this
    message with a 5xx. Everything else (no connection, 4xx, a bad login the admin can fix)
    is retried until the attempts run out."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return all(code >= 500 for code, _ in exc.recipients.values())
    if isinstance(exc, smtplib.SMTPDataError):
        return exc.smtp_code >= 500
    return False


def describe(exc: Exception) -> str:
    """What the admin sees: the server's reply or the network error, in one line."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        replies = [f"{code} {_text(reply)}" for code, reply in exc.recipients.values()]
        text = "recipient refused: " + "; ".join(replies)
    elif isinstance(exc, smtplib.SMTPResponseException):
        text = f"{exc.smtp_code} {_text(exc.smtp_error)}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())[:500]


def _text(reply: bytes | str) -> str:
    return reply.decode(errors="replace") if isinstance(reply, bytes) else reply


def close(connection: smtplib.SMTP | None) -> None:
    """Say goodbye if the server still listens; a dead connection is just dropped."""
    if connection is None:
        return
    try:
        connection.quit()
    except (smtplib.SMTPException, OSError):
        connection.close()
