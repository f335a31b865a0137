"""A real SMTP server (aiosmtpd) on a free port that keeps every message it accepts, and
settings that send mail to it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from server.config import Settings
from tests.conftest import MakeSettings
from tests.servers import free_port

SENDER = "RodeoAI <rodeo@club.example>"
PUBLIC_URL = "https://rodeo.example"


class Inbox:
    """What the server accepted, in order; addresses starting `refused` get 550."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []

    async def handle_RCPT(  # aiosmtpd calls its hooks by these names
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if address.startswith("refused"):
            return "550 5.1.1 no such mailbox here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = envelope.original_content or envelope.content
        message = message_from_bytes(raw, policy=policy.default)
        assert isinstance(message, EmailMessage)
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        self.messages.append(message)
        return "250 Message accepted for delivery"

    def wait_for(self, count: int, timeout: float = 30) -> list[EmailMessage]:
        """Poll until `count` messages arrived (a generous cap, no timing claim)."""
        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(self.messages) >= count, f"{len(self.messages)} of {count} mails arrived"
        return self.messages


class SmtpServer:
    """One port; the server can be stopped and started again on it (an outage)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.inbox = Inbox()
        self._controller: Controller | None = None

    def start(self) -> None:
        self._controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def smtp_down() -> Iterator[SmtpServer]:
    """A port with no server yet: the test starts it when the outage ends."""
    server = SmtpServer()
    yield server
    server.stop()


MailSettings = Callable[..., Settings]


def mail_values(port: int) -> dict[str, Any]:
    return {
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "smtp_tls": "none",
        "smtp_from": SENDER,
        "smtp_timeout_s": 5.0,
        "public_url": PUBLIC_URL,
        "mail_poll_s": 0.1,
        "mail_retry_s": 30.0,
        "mail_max_attempts": 3,
        "mail_lease_s": 60.0,
    }


@pytest.fixture
def mail_settings(make_settings: MakeSettings) -> Callable[..., Settings]:
    """Settings whose mail goes to the given server: mail_settings(smtp, **overrides)."""

    def make(server: SmtpServer, **overrides: Any) -> Settings:
        return make_settings(**{**mail_values(server.port), **overrides})

    return make
