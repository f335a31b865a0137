"""E-mail through an outbox table: domains queue a mail in the same transaction as the event
that causes it (`Outbox.enqueue`), and a sender thread in each worker claims, sends and marks
each one (`MailSender`). With no SMTP host nothing is queued and nothing runs."""

from server.notify.messages import Mail
from server.notify.outbox import Claimed, MailConfig, Outbox
from server.notify.sender import MailSender
from server.notify.smtp import SmtpTransport

__all__ = ["Claimed", "Mail", "MailConfig", "MailSender", "Outbox", "SmtpTransport"]
