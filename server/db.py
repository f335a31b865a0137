"""SQLite storage: the source of truth for documents, chunks and their embeddings.

The FAISS index is only a cache of the `chunk.embedding` column and can always be rebuilt
from here. Lexical search uses an FTS5 table kept in step with `chunk` by triggers, so
the two can never disagree after a crash.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, UniqueConstraint, event, inspect, text
from sqlmodel import Field, Session, SQLModel, create_engine

log = logging.getLogger(__name__)


def utcnow() -> datetime:
    return datetime.now(UTC)


def json_list(raw: str | None) -> list[str]:
    value = json.loads(raw or "[]")
    return [str(v) for v in value] if isinstance(value, list) else []


class Document(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    source: str = Field(unique=True, index=True, description="Stable name, e.g. knowledge/x.md")
    title: str
    kind: str = Field(description="md, txt, pdf, html, vtt, srt or jsonl")
    content_hash: str = Field(index=True, description="sha256 of the raw file bytes")
    category: str | None = None
    events_json: str = Field(default="[]")
    skill_level: str | None = None
    basis: str | None = Field(default=None, description="Front-matter source or basis line")
    owner_id: int | None = Field(default=None, index=True, description="None: shared knowledge")
    chunk_count: int = 0
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)

    @property
    def events(self) -> list[str]:
        return json_list(self.events_json)


class Chunk(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    document_id: int = Field(foreign_key="document.id", index=True, ondelete="CASCADE")
    ordinal: int
    text: str
    heading: str | None = None
    location: str | None = Field(default=None, description="Heading path, page or timestamp")
    token_count: int
    content_hash: str = Field(index=True)
    embedding: bytes = Field(description="float32 vector, L2-normalised")


class User(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(unique=True, index=True, description="Stored lower-cased")
    display_name: str = ""
    password_hash: str | None = Field(default=None, description="None for OAuth-only users")
    role: str = Field(default="user", description="user, expert or admin")
    skill_level: str | None = None
    events_json: str = "[]"
    classification: float | None = None
    plan: str = "free"
    credits: int = 0
    disabled: bool = False
    token_version: int = Field(default=0, description="Bumped to void every access token")
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)

    @property
    def events(self) -> list[str]:
        return json_list(self.events_json)


class OAuthIdentity(SQLModel, table=True):
    """An external account, keyed on (issuer, subject) and never on e-mail."""

    __table_args__ = (UniqueConstraint("issuer", "subject"),)
    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="user.id", index=True, ondelete="CASCADE")
    provider: str
    issuer: str
    subject: str
    email: str | None = None
    created_at: datetime = Field(default_factory=utcnow)


class SessionFamily(SQLModel, table=True):
    """One sign-in: its refresh tokens rotate inside it, and revoking it ends them all."""

    id: str = Field(primary_key=True)
    user_id: int = Field(foreign_key="user.id", index=True, ondelete="CASCADE")
    created_at: datetime = Field(default_factory=utcnow)
    revoked_at: datetime | None = None
    revoked_reason: str | None = None


class RefreshToken(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    family_id: str = Field(foreign_key="sessionfamily.id", index=True, ondelete="CASCADE")
    token_hash: str = Field(unique=True, index=True)
    expires_at: datetime
    used_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)


class ApiKey(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="user.id", index=True, ondelete="CASCADE")
    name: str
    prefix: str = Field(description="First characters, shown so users can tell keys apart")
    key_hash: str = Field(unique=True, index=True)
    created_at: datetime = Field(default_factory=utcnow)
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None


class OAuthState(SQLModel, table=True):
    """A pending OAuth login: single use, short-lived, checked on the callback."""

    state_hash: str = Field(primary_key=True)
    provider: str
    nonce: str
    code_verifier: str
    created_at: datetime = Field(default_factory=utcnow)
    used_at: datetime | None = None


class PasswordReset(SQLModel, table=True):
    token_hash: str = Field(primary_key=True)
    user_id: int = Field(foreign_key="user.id", index=True, ondelete="CASCADE")
    expires_at: datetime
    used_at: datetime | None = None


class Conversation(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="user.id", index=True, ondelete="CASCADE")
    title: str = ""
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow, index=True)


class Message(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    conversation_id: int = Field(foreign_key="conversation.id", index=True, ondelete="CASCADE")
    role: str
    content: str
    sources_json: str = "[]"
    backend: str | None = None
    model: str | None = None
    metrics_json: str = "{}"
    created_at: datetime = Field(default_factory=utcnow)


class AnswerMetric(SQLModel, table=True):
    """One row per answer, whichever API asked: the raw material of the learning loop."""

    id: int | None = Field(default=None, primary_key=True)
    question: str
    response: str
    chunks_used: int
    sources_json: str = "[]"
    model: str
    backend: str
    skipped_json: str = "[]"
    skill_level: str
    latency_ms: int
    time_to_first_token_ms: int | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    api: str = Field(default="chat", description="chat, openai, ollama or ws")
    user_id: int | None = Field(default=None, index=True)
    conversation_id: int | None = Field(default=None, index=True)
    created_at: datetime = Field(default_factory=utcnow, index=True)
    status: str = Field(
        default="done",
        sa_column_kwargs={"server_default": "done"},
        description="done; aborted (the client left mid-stream) or failed (the backend did)",
    )


class BillingCustomer(SQLModel, table=True):
    user_id: int = Field(primary_key=True, foreign_key="user.id", ondelete="CASCADE")
    customer_id: str = Field(unique=True, index=True)


class BillingOrder(SQLModel, table=True):
    """A credit-pack purchase: created before Stripe is called, paid only by a webhook."""

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="user.id", index=True)
    credits: int
    amount_cents: int
    currency: str
    status: str = Field(default="pending", description="pending, paid, failed or refunded")
    payment_intent_id: str | None = Field(default=None, unique=True, index=True)
    refunded_cents: int = 0
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class BillingSubscription(SQLModel, table=True):
    id: str = Field(primary_key=True, description="Stripe subscription id")
    user_id: int = Field(foreign_key="user.id", index=True)
    plan: str
    status: str
    cancel_at_period_end: bool = False
    current_period_end: datetime | None = None
    updated_at: datetime = Field(default_factory=utcnow)


class LedgerEntry(SQLModel, table=True):
    """Append-only: credits granted (+) and spent or taken back (-)."""

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="user.id", index=True)
    delta: int
    kind: str = Field(description="purchase, grant, message, refund")
    reference: str | None = Field(default=None, unique=True, description="Makes grants once-only")
    note: str = ""
    created_at: datetime = Field(default_factory=utcnow)


class Usage(SQLModel, table=True):
    """One row per question answered, for daily quotas (users and guests)."""

    id: int | None = Field(default=None, primary_key=True)
    subject: str = Field(index=True, description="user:<id> or guest:<address>")
    day: str = Field(index=True)
    paid_with: str = Field(description="quota or credit")
    created_at: datetime = Field(default_factory=utcnow)


class StripeEvent(SQLModel, table=True):
    """Written in the same transaction as the event's effect: a redelivery finds it and stops."""

    id: str = Field(primary_key=True)
    type: str
    received_at: datetime = Field(default_factory=utcnow)


class Meta(SQLModel, table=True):
    key: str = Field(primary_key=True)
    value: str


def make_engine(database_path: Path) -> Engine:
    """An engine with the pragmas SQLite needs for safe concurrent use."""
    database_path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        f"sqlite:///{database_path}",
        connect_args={"check_same_thread": False, "timeout": 30},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Autocommit at the driver level; SQLAlchemy's "begin" hook below issues BEGIN.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Writers take the lock up front: a deferred BEGIN that later upgrades to a
        # write lock fails with SQLITE_BUSY under contention instead of waiting.
        immediate = conn.get_execution_options().get("sqlite_immediate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    migrate(engine)
    return engine


MIGRATIONS = Path(__file__).resolve().parent / "migrations"
BASELINE = "0001"  # the schema of every release before migrations existed


def alembic_config(connection: Any) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def schema_revision(engine: Engine) -> str | None:
    """The migration the database is at; None before migrations (or with no database)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def migrate(engine: Engine) -> str:
    """Bring the schema to the newest migration, in one BEGIN IMMEDIATE transaction, so
    workers starting together take turns. A database from before migrations (tables, no
    version) is stamped at the baseline first, which is its schema; nothing is rewritten."""
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    with engine.execution_options(sqlite_immediate=True).begin() as connection:
        config = alembic_config(connection)
        tables = set(inspect(connection).get_table_names())
        before = MigrationContext.configure(connection).get_current_revision()
        if before is None and "document" in tables:
            command.stamp(config, BASELINE)
            log.info("database from before migrations: recorded as baseline %s", BASELINE)
            before = BASELINE
        head = ScriptDirectory.from_config(config).get_current_head()
        if before == head:
            return "current"
        command.upgrade(config, "head")
    log.info("database schema upgraded from %s to %s", before or "empty", head)
    return "upgraded"


@contextmanager
def read_session(engine: Engine) -> Iterator[Session]:
    with Session(engine, expire_on_commit=False) as session:
        yield session


@contextmanager
def write_session(engine: Engine) -> Iterator[Session]:
    """A session whose transaction starts with BEGIN IMMEDIATE and commits on exit."""
    with Session(engine.execution_options(sqlite_immediate=True), expire_on_commit=False) as s:
        yield s
        s.commit()


def get_meta(session: Session, key: str, default: str | None = None) -> str | None:
    row = session.get(Meta, key)
    return row.value if row else default


def set_meta(session: Session, key: str, value: str) -> None:
    row = session.get(Meta, key)
    if row:
        row.value = value
    else:
        session.add(Meta(key=key, value=value))


def bump_generation(session: Session) -> int:
    """Each committed change to chunks gets a new generation number; the index records it."""
    generation = int(get_meta(session, "generation", "0") or 0) + 1
    set_meta(session, "generation", str(generation))
    return generation


def current_generation(engine: Engine) -> int:
    with engine.connect() as conn:
        row = conn.execute(text("SELECT value FROM meta WHERE key = 'generation'")).first()
    return int(row[0]) if row else 0


def counts(engine: Engine) -> tuple[int, int]:
    """(documents, chunks)."""
    with engine.connect() as conn:
        docs = conn.execute(text("SELECT count(*) FROM document")).scalar_one()
        chunks = conn.execute(text("SELECT count(*) FROM chunk")).scalar_one()
    return int(docs), int(chunks)
