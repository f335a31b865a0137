"""Every table, in one module so Alembic sees them all and no domain imports another's.

The database is the source of truth for documents, chunks and their embeddings; the FAISS
index is only a cache of `chunk.embedding`. Table names are explicit, and none is a
PostgreSQL reserved word (users live in `account`).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from sqlalchemy import BigInteger, Integer, UniqueConstraint
from sqlmodel import Field, SQLModel

# Ids are 64-bit on both engines, as the API promises (up to 2**63 - 1). SQLite's INTEGER
# already is, and must stay INTEGER for a primary key to be the rowid.
ID = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


def json_list(raw: str | None) -> list[str]:
    value = json.loads(raw or "[]")
    return [str(v) for v in value] if isinstance(value, list) else []


class Document(SQLModel, table=True):
    __tablename__ = "document"
    id: int | None = Field(default=None, primary_key=True, sa_type=ID)
    source: str = Field(unique=True, index=True, description="Stable name, e.g. knowledge/x.md")
    title: str
    kind: str = Field(description="md, txt, pdf, html, vtt, srt or jsonl")
    content_hash: str = Field(index=True, description="sha256 of the raw file bytes")
    category: str | None = None
    events_json: str = Field(default="[]")
    skill_level: str | None = None
    basis: str | None = Field(default=None, description="Front-matter source or basis line")
    owner_id: int | None = Field(
        default=None, index=True, description="None: shared knowledge", sa_type=ID
    )
    chunk_count: int = 0
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)

    @property
    def events(self) -> list[str]:
        return json_list(self.events_json)


class Chunk(SQLModel, table=True):
    __tablename__ = "chunk"
    id: int | None = Field(default=None, primary_key=True, sa_type=ID)
    document_id: int = Field(foreign_key="document.id", index=True, ondelete="CASCADE", sa_type=ID)
    ordinal: int
    text: str
    heading: str | None = None
    location: str | None = Field(default=None, description="Heading path, page or timestamp")
    token_count: int
    content_hash: str = Field(index=True)
    embedding: bytes = Field(description="float32 vector, L2-normalised")


class User(SQLModel, table=True):
    __tablename__ = "account"
    id: int | None = Field(default=None, primary_key=True, sa_type=ID)
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

    __tablename__ = "oauthidentity"
    __table_args__ = (UniqueConstraint("issuer", "subject"),)
    id: int | None = Field(default=None, primary_key=True, sa_type=ID)
    user_id: int = Field(foreign_key="account.id", index=True, ondelete="CASCADE", sa_type=ID)
    provider: str
    issuer: str
    subject: str
    email: str | None = None
    created_at: datetime = Field(default_factory=utcnow)


class SessionFamily(SQLModel, table=True):
    """One sign-in: its refresh tokens rotate inside it, and revoking it ends them all."""

    __tablename__ = "sessionfamily"
    id: str = Field(primary_key=True)
    user_id: int = Field(foreign_key="account.id", index=True, ondelete="CASCADE", sa_type=ID)
    created_at: datetime = Field(default_factory=utcnow)
    revoked_at: datetime | None = None
    revoked_reason: str | None = None


class RefreshToken(SQLModel, table=True):
    __tablename__ = "refreshtoken"
    id: int | None = Field(default=None, primary_key=True, sa_type=ID)
    family_id: str = Field(foreign_key="sessionfamily.id", index=True, ondelete="CASCADE")
    token_hash: str = Field(unique=True, index=True)
    expires_at: datetime
    used_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)


class ApiKey(SQLModel, table=True):
    __tablename__ = "apikey"
    id: int | None = Field(default=None, primary_key=True, sa_type=ID)
    user_id: int = Field(foreign_key="account.id", index=True, ondelete="CASCADE", sa_type=ID)
    name: str
    prefix: str = Field(description="First characters, shown so users can tell keys apart")
    key_hash: str = Field(unique=True, index=True)
    created_at: datetime = Field(default_factory=utcnow)
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None


class OAuthState(SQLModel, table=True):
    """A pending OAuth login: single use, short-lived, checked on the callback."""

    __tablename__ = "oauthstate"
    state_hash: str = Field(primary_key=True)
    provider: str
    nonce: str
    code_verifier: str
    created_at: datetime = Field(default_factory=utcnow)
    used_at: datetime | None = None


class PasswordReset(SQLModel, table=True):
    __tablename__ = "passwordreset"
    token_hash: str = Field(primary_key=True)
    user_id: int = Field(foreign_key="account.id", index=True, ondelete="CASCADE", sa_type=ID)
    expires_at: datetime
    used_at: datetime | None = None


class Conversation(SQLModel, table=True):
    __tablename__ = "conversation"
    id: int | None = Field(default=None, primary_key=True, sa_type=ID)
    user_id: int = Field(foreign_key="account.id", index=True, ondelete="CASCADE", sa_type=ID)
    title: str = ""
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow, index=True)


class Message(SQLModel, table=True):
    __tablename__ = "message"
    id: int | None = Field(default=None, primary_key=True, sa_type=ID)
    conversation_id: int = Field(
        foreign_key="conversation.id", index=True, ondelete="CASCADE", sa_type=ID
    )
    role: str
    content: str
    sources_json: str = "[]"
    backend: str | None = None
    model: str | None = None
    metrics_json: str = "{}"
    created_at: datetime = Field(default_factory=utcnow)


class AnswerMetric(SQLModel, table=True):
    """One row per answer, whichever API asked: the raw material of the learning loop."""

    __tablename__ = "answermetric"
    id: int | None = Field(default=None, primary_key=True, sa_type=ID)
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
    user_id: int | None = Field(default=None, index=True, sa_type=ID)
    conversation_id: int | None = Field(default=None, index=True, sa_type=ID)
    created_at: datetime = Field(default_factory=utcnow, index=True)
    status: str = Field(
        default="done",
        sa_column_kwargs={"server_default": "done"},
        description="done; aborted (the client left mid-stream) or failed (the backend did)",
    )
    feedback_token_hash: str | None = Field(
        default=None, description="sha256 of the token a guest rates this answer with"
    )
    experiment_id: int | None = Field(default=None, index=True, sa_type=ID)
    variant: str | None = Field(default=None, description="the experiment variant that answered")


class Feedback(SQLModel, table=True):
    """The asker's rating of an answer; rating again replaces it (one row per answer)."""

    __tablename__ = "feedback"
    id: int | None = Field(default=None, primary_key=True, sa_type=ID)
    answer_id: int = Field(
        foreign_key="answermetric.id", unique=True, ondelete="CASCADE", sa_type=ID
    )
    rating: str = Field(description="up or down")
    comment: str | None = None
    tags_json: str = "[]"
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class Review(SQLModel, table=True):
    """An expert's verdict on an answer: a 1-5 rating, and optionally a corrected answer,
    the knowledge the base lacked, and a note."""

    __tablename__ = "review"
    id: int | None = Field(default=None, primary_key=True, sa_type=ID)
    answer_id: int = Field(
        foreign_key="answermetric.id", index=True, ondelete="CASCADE", sa_type=ID
    )
    reviewer_id: int = Field(foreign_key="account.id", index=True, sa_type=ID)
    rating: int
    corrected_answer: str | None = None
    knowledge_gap: str | None = None
    note: str | None = None
    created_at: datetime = Field(default_factory=utcnow)


class Experiment(SQLModel, table=True):
    """An A/B test of answer variants; at most one runs at a time. Its variants (name,
    weight and what they change) are fixed once it starts, so results stay comparable."""

    __tablename__ = "experiment"
    id: int | None = Field(default=None, primary_key=True, sa_type=ID)
    name: str
    status: str = Field(default="running", index=True, description="running or stopped")
    variants_json: str
    winner: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    stopped_at: datetime | None = None


class BillingCustomer(SQLModel, table=True):
    __tablename__ = "billingcustomer"
    user_id: int = Field(primary_key=True, foreign_key="account.id", ondelete="CASCADE", sa_type=ID)
    customer_id: str = Field(unique=True, index=True)


class BillingOrder(SQLModel, table=True):
    """A credit-pack purchase: created before Stripe is called, paid only by a webhook."""

    __tablename__ = "billingorder"
    id: int | None = Field(default=None, primary_key=True, sa_type=ID)
    user_id: int = Field(foreign_key="account.id", index=True, sa_type=ID)
    credits: int
    amount_cents: int
    currency: str
    status: str = Field(default="pending", description="pending, paid, failed or refunded")
    payment_intent_id: str | None = Field(default=None, unique=True, index=True)
    refunded_cents: int = 0
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class BillingSubscription(SQLModel, table=True):
    __tablename__ = "billingsubscription"
    id: str = Field(primary_key=True, description="Stripe subscription id")
    user_id: int = Field(foreign_key="account.id", index=True, sa_type=ID)
    plan: str
    status: str
    cancel_at_period_end: bool = False
    current_period_end: datetime | None = None
    updated_at: datetime = Field(default_factory=utcnow)


class LedgerEntry(SQLModel, table=True):
    """Append-only: credits granted (+) and spent or taken back (-)."""

    __tablename__ = "ledgerentry"
    id: int | None = Field(default=None, primary_key=True, sa_type=ID)
    user_id: int = Field(foreign_key="account.id", index=True, sa_type=ID)
    delta: int
    kind: str = Field(description="purchase, grant, message, refund")
    reference: str | None = Field(default=None, unique=True, description="Makes grants once-only")
    note: str = ""
    created_at: datetime = Field(default_factory=utcnow)


class Usage(SQLModel, table=True):
    """One row per question answered, for daily quotas (users and guests)."""

    __tablename__ = "usage"
    id: int | None = Field(default=None, primary_key=True, sa_type=ID)
    subject: str = Field(index=True, description="user:<id> or guest:<address>")
    day: str = Field(index=True)
    paid_with: str = Field(description="quota or credit")
    created_at: datetime = Field(default_factory=utcnow)


class StripeEvent(SQLModel, table=True):
    """Written in the same transaction as the event's effect: a redelivery finds it and stops."""

    __tablename__ = "stripeevent"
    id: str = Field(primary_key=True)
    type: str
    received_at: datetime = Field(default_factory=utcnow)


class MailOutbox(SQLModel, table=True):
    """One e-mail to send, written in the same transaction as the event that causes it; the
    sender claims, sends and marks it (server/notify/outbox.py says how, and what a crash
    mid-send does)."""

    __tablename__ = "mailoutbox"
    id: int | None = Field(default=None, primary_key=True, sa_type=ID)
    dedupe_key: str = Field(
        unique=True, description="What the mail is about, e.g. receipt:invoice:in_1; once only"
    )
    kind: str = Field(description="welcome, password_reset, receipt, payment_failed, ...")
    recipient: str
    subject: str
    body: str = Field(description="Plain text; emptied once sent where it held a secret link")
    message_id: str = Field(description="The Message-ID header, the same on every attempt")
    status: str = Field(default="pending", description="pending, sending, sent or failed")
    attempts: int = 0
    next_attempt_at: datetime = Field(
        default_factory=utcnow, index=True, description="Due time; while sending, lease end"
    )
    lease_owner: str | None = Field(default=None, description="The claim now sending it")
    expires_at: datetime | None = Field(default=None, description="Not sent after this")
    last_error: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    sent_at: datetime | None = None


class Meta(SQLModel, table=True):
    __tablename__ = "meta"
    key: str = Field(primary_key=True)
    value: str


def is_lexical_index(name: str | None, type_: str) -> bool:
    """The lexical index's own objects, made by migrations and not mapped here."""
    if type_ == "table":
        return bool(name and name.startswith("chunk_fts"))
    return (type_, name) in {("column", "tsv"), ("index", "chunk_tsv_gin")}


def is_unmapped(name: str | None, type_: str) -> bool:
    """Objects no model maps: the lexical index, and pgvector's `chunk_vector` table, which
    the vector store makes on first use (server/rag/pgvector_store.py says why)."""
    return is_lexical_index(name, type_) or (type_ == "table" and name == "chunk_vector")
