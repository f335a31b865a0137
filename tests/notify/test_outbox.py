"""The outbox's promises, with real processes killed with SIGKILL and a real SMTP server:
a mail committed with its event survives a kill -9 before any sender ran and is delivered
exactly once, however many senders race for it; a sender killed mid-send leaves its mail to
be sent again after the lease (the documented at-least-once window, same Message-ID); an
outage is retried with doubling waits, and a mail that cannot go ends `failed`, with the
server's reply, for the admin."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from datetime import timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from sqlmodel import select

from server.components import Components
from server.config import Settings
from server.db import MailOutbox, read_session, utcnow
from server.main import create_app
from server.notify import MailSender, SmtpTransport
from tests import databases
from tests.conftest import ROOT
from tests.helpers import PASSWORD, bearer
from tests.notify.conftest import MailSettings, SmtpServer, mail_values

# Queues mail the way the app does (three sign-ups, each welcome in its account's own
# transaction, then 40 more in one), and dies by SIGKILL the moment that commits.
ENQUEUE_AND_DIE = """
import os, signal
from server.components import Components
from server.config import Settings
from server.db import write_session
from server.notify import Mail
c = Components(Settings())
for n in range(3):
    c.accounts.register(email=f"rider{n}@example.com", password="correct horse battery",
                        display_name="", ip="10.0.0.1")
with write_session(c.engine) as session:
    for n in range(40):
        c.mail.enqueue(session, Mail("notice", f"Notice {n}", "Hello"),
                       key=f"bulk:{n}", to=f"bulk{n}@example.com")
os.kill(os.getpid(), signal.SIGKILL)
"""

# A worker's sender: waits for "go" so several start together, sends what it claims.
SENDER = """
import sys
from server.components import Components
from server.config import Settings
from server.notify import MailSender, SmtpTransport
c = Components(Settings())
sender = MailSender(lambda: c.mail, SmtpTransport.from_settings(c.settings))
sender.outbox.next_due()  # the database is open before the start line
print("ready", flush=True)
sys.stdin.readline()
print(sender.run_once(), flush=True)
"""

# Claims one mail and dies: after the server took it (`after_send`), or before connecting.
CLAIM_AND_DIE = """
import os, signal, sys
from server.components import Components
from server.config import Settings
from server.notify import SmtpTransport
c = Components(Settings())
transport = SmtpTransport.from_settings(c.settings)
mail = c.mail.claim()
assert mail is not None
if sys.argv[1] == "after_send":
    transport.send(transport.connect(), mail)
os.kill(os.getpid(), signal.SIGKILL)
"""


def child_env(settings: Settings, server: SmtpServer) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RODEOAI_")}
    values = {f"RODEOAI_{k.upper()}": str(v) for k, v in mail_values(server.port).items()}
    return {
        **env,
        **values,
        "RODEOAI_DATA_DIR": str(settings.data_dir),
        "RODEOAI_AUTOLOAD_KNOWLEDGE": "false",
        "RODEOAI_LOG_LEVEL": "WARNING",
        **databases.database_env(Path(settings.data_dir)),
    }


def run_child(code: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def rows(components: Components) -> list[MailOutbox]:
    with read_session(components.engine) as session:
        return list(session.exec(select(MailOutbox)).all())


def sender_for(components: Components) -> MailSender:
    return MailSender(lambda: components.mail, SmtpTransport.from_settings(components.settings))


def test_mail_queued_before_a_kill_9_is_sent_exactly_once_by_racing_senders(
    smtp: SmtpServer, mail_settings: MailSettings
) -> None:
    settings = mail_settings(smtp)
    env = child_env(settings, smtp)
    died = run_child(ENQUEUE_AND_DIE, env)
    assert died.returncode == -signal.SIGKILL, died.stderr
    components = Components(settings)
    assert [r.status for r in rows(components)] == ["pending"] * 43  # all survived the kill
    assert smtp.inbox.messages == []  # and none went before it
    senders = [
        subprocess.Popen(
            [sys.executable, "-c", SENDER],
            env=env,
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    for process in senders:
        assert process.stdout and process.stdout.readline().strip() == "ready"
    for process in senders:  # all at once, then wait: they race for the same rows
        assert process.stdin
        process.stdin.write("go\n")
        process.stdin.close()
    outputs = [(p.stdout.read(), p.stderr.read()) for p in senders if p.stdout and p.stderr]
    for process in senders:
        process.wait(timeout=120)
    assert all(p.returncode == 0 for p in senders), [err for _, err in outputs]
    sent_by = [int(out.split()[-1]) for out, _ in outputs]
    assert sum(sent_by) == 43
    assert sender_for(components).run_once() == 0  # a sender started afterwards finds none
    received = Counter(to for _, tos in smtp.inbox.envelopes for to in tos)
    assert len(received) == 43 and set(received.values()) == {1}
    assert len({m["Message-ID"] for m in smtp.inbox.messages}) == 43
    assert {r.status for r in rows(components)} == {"sent"}


def test_a_sender_killed_mid_send_leaves_the_mail_to_its_lease(
    smtp: SmtpServer, mail_settings: MailSettings
) -> None:
    settings = mail_settings(smtp)
    components = Components(settings)
    components.accounts.register(
        email="late@example.com", password=PASSWORD, display_name="", ip="x"
    )
    env = child_env(settings, smtp)
    # Killed after the server accepted it and before `sent` was written: the window SMTP
    # leaves open. While the lease holds, nobody sends it again.
    died = run_child(CLAIM_AND_DIE, env, "after_send")
    assert died.returncode == -signal.SIGKILL, died.stderr
    assert len(smtp.inbox.messages) == 1
    [row] = rows(components)
    assert (row.status, row.attempts) == ("sending", 1)
    sender = sender_for(components)
    assert sender.run_once() == 0
    # Past the lease the mail goes again, as documented: at least once, the same Message-ID.
    assert sender.run_once(now=utcnow() + timedelta(seconds=settings.mail_lease_s + 1)) == 1
    first, second = smtp.inbox.messages
    assert first["Message-ID"] == second["Message-ID"] == row.message_id
    [row] = rows(components)
    assert (row.status, row.attempts) == ("sent", 2)


def test_a_sender_killed_before_the_server_took_the_mail_loses_nothing(
    smtp: SmtpServer, mail_settings: MailSettings
) -> None:
    settings = mail_settings(smtp)
    components = Components(settings)
    components.accounts.register(
        email="calm@example.com", password=PASSWORD, display_name="", ip="x"
    )
    died = run_child(CLAIM_AND_DIE, child_env(settings, smtp), "before_send")
    assert died.returncode == -signal.SIGKILL, died.stderr
    sender = sender_for(components)
    assert sender.run_once() == 0 and smtp.inbox.messages == []
    later = utcnow() + timedelta(seconds=settings.mail_lease_s + 1)
    assert sender.run_once(now=later) == 1
    assert sender.run_once(now=later + timedelta(hours=1)) == 0
    [mail] = smtp.inbox.messages
    assert mail["To"] == "calm@example.com"


def test_an_outage_is_retried_with_doubling_waits_then_delivered(
    smtp_down: SmtpServer, mail_settings: MailSettings
) -> None:
    settings = mail_settings(smtp_down)
    retry = timedelta(seconds=settings.mail_retry_s)
    components = Components(settings)
    for email in ("patient@example.com", "second@example.com"):
        components.accounts.register(email=email, password=PASSWORD, display_name="", ip="x")
    sender = sender_for(components)

    def state() -> dict[str, MailOutbox]:
        return {row.recipient: row for row in rows(components)}

    now = utcnow()
    assert sender.run_once(now=now) == 0
    first = state()["patient@example.com"]
    assert (first.status, first.attempts, first.next_attempt_at) == ("pending", 1, now + retry)
    assert "Connection" in (first.last_error or "")
    assert state()["second@example.com"].attempts == 0  # no server: the pass ends there
    assert sender.run_once(now=now) == 0  # the second one's turn; the first is not due
    assert sender.run_once(now=now) == 0  # neither is due: no attempt is spent
    assert {r: row.attempts for r, row in state().items()} == {
        "patient@example.com": 1,
        "second@example.com": 1,
    }
    later = now + retry
    assert sender.run_once(now=later) == 0
    first = state()["patient@example.com"]
    assert (first.attempts, first.next_attempt_at) == (2, later + 2 * retry)  # doubled
    smtp_down.start()  # the server is back
    assert sender.run_once(now=later + 2 * retry) == 2
    assert {(row.status, row.last_error) for row in state().values()} == {("sent", None)}
    assert sorted(m["To"] for m in smtp_down.inbox.messages) == [
        "patient@example.com",
        "second@example.com",
    ]


def test_mail_that_cannot_go_ends_failed_with_the_reason_for_the_admin(
    smtp: SmtpServer, smtp_down: SmtpServer, mail_settings: MailSettings
) -> None:
    settings = mail_settings(smtp)
    components = Components(settings)
    # One address the server refuses (550: final at once), one server that stays down.
    components.accounts.register(
        email="refused@example.com", password=PASSWORD, display_name="", ip="x"
    )
    assert sender_for(components).run_once() == 0
    down = Components(settings.model_copy(update={"smtp_port": smtp_down.port}))
    down.accounts.register(email="unlucky@example.com", password=PASSWORD, display_name="", ip="x")
    sender, when = sender_for(down), utcnow()
    for _ in range(settings.mail_max_attempts):
        sender.run_once(now=when)
        when += timedelta(hours=2)
    assert sender.run_once(now=when) == 0
    with TestClient(create_app(settings.model_copy(update={"smtp_host": None}))) as api:
        api_components: Components = api.app.state.components  # type: ignore[attr-defined]
        api_components.accounts.create_admin("boss@example.com", PASSWORD)
        token = api.post(
            "/api/auth/login", json={"email": "boss@example.com", "password": PASSWORD}
        )
        failed = api.get(
            "/api/admin/mail?status=failed", headers=bearer(token.json()["access_token"])
        )
    by_recipient = {r["recipient"]: r for r in failed.json()}
    refused, unlucky = by_recipient["refused@example.com"], by_recipient["unlucky@example.com"]
    assert refused["attempts"] == 1 and "550" in refused["last_error"]
    assert unlucky["attempts"] == settings.mail_max_attempts
    assert "Connection" in unlucky["last_error"]
    assert smtp.inbox.messages == [] and smtp_down.inbox.messages == []


def test_a_reset_link_is_not_mailed_after_it_expired(
    smtp: SmtpServer, mail_settings: MailSettings
) -> None:
    components = Components(mail_settings(smtp))
    components.accounts.create_admin("late@example.com", PASSWORD)  # no welcome mail
    token = components.accounts.request_password_reset(email="late@example.com", ip="x")
    assert token is not None
    assert sender_for(components).run_once(now=utcnow() + timedelta(hours=2)) == 0
    [row] = rows(components)
    assert (row.status, row.last_error) == ("failed", "expired before it could be sent")
    assert token not in row.body and smtp.inbox.messages == []
