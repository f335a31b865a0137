"""Request and response models of the HTTP API."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from server.config import SkillLevel

if TYPE_CHECKING:
    from server.rag.retriever import Hit

# SQLite and PostgreSQL integers are 64-bit signed: a larger id or offset can name nothing,
# and refusing it here keeps it from ever reaching the database as an overflow.
MAX_ID = 2**63 - 1


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=100_000)


class ChatRequest(BaseModel):
    messages: list[ChatMessage] = Field(min_length=1, max_length=200)
    skill_level: SkillLevel | None = Field(
        default=None, description="Overrides the profile's depth: beginner ... pro."
    )
    conversation_id: int | None = Field(
        default=None,
        ge=1,
        le=MAX_ID,
        description="Continue this saved conversation (signed-in users).",
    )
    save: bool = Field(default=True, description="Save a signed-in user's exchange.")


class SourceOut(BaseModel):
    n: int = Field(description="The number the answer cites as [n].")
    source: str
    title: str
    chunk_id: int
    location: str | None
    score: float
    cited: bool


class SkippedBackend(BaseModel):
    backend: str
    reason: str


class DroppedSentence(BaseModel):
    sentence: str = Field(description="A sentence of the model's draft, as it wrote it")
    reason: str = Field(description="Why the support check removed it")


class ChatResponse(BaseModel):
    response: str
    sources: list[SourceOut]
    model: str
    backend: str
    latency_ms: int
    chunks_used: int
    skill_level: SkillLevel
    skipped_backends: list[SkippedBackend] = []
    dropped: list[DroppedSentence] = Field(
        default=[], description="Draft sentences the sources do not support, removed"
    )
    conversation_id: int | None = None
    time_to_first_token_ms: int | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    answer_id: int | None = Field(
        default=None, description="This answer's record: rate or review it by this id."
    )
    feedback_token: str | None = Field(
        default=None,
        description="Guests only: send it with feedback on this answer "
        "(POST /api/answers/{answer_id}/feedback).",
    )


class SearchHit(BaseModel):
    source: str
    title: str
    chunk_id: int
    score: float
    text: str
    location: str | None


class PassageOut(BaseModel):
    chunk_id: int
    source: str
    title: str
    heading: str | None
    location: str | None = Field(description="Heading path, page or timestamp")
    text: str

    @classmethod
    def of(cls, hit: Hit) -> PassageOut:
        """A stored passage (a retriever `Hit`) as the API shows it."""
        return cls(
            chunk_id=hit.chunk_id,
            source=hit.source,
            title=hit.title,
            heading=hit.heading,
            location=hit.location,
            text=hit.text,
        )


class HealthOut(BaseModel):
    status: Literal["ok", "degraded", "loading"]
    startup: dict[str, str] = Field(
        default_factory=dict,
        description="What a starting server is doing: state and detail; `background` while "
        "work after start-up still runs.",
    )
    version: str
    models: dict[str, object]
    documents: int
    chunks: int
    index: dict[str, object]


class ReadyOut(BaseModel):
    ready: bool
    checks: dict[str, str] = Field(
        description='database, migrations, models, index: each "ok" or why not'
    )
    vector_store: str = Field(description="Where the vectors live: faiss or pgvector.")


class ErrorBody(BaseModel):
    code: str
    message: str
    details: object | None = None
    request_id: str | None = None


class ErrorOut(BaseModel):
    error: ErrorBody


def error_responses(*statuses: int) -> dict[int | str, dict[str, object]]:
    """OpenAPI entries for error replies, all in the one envelope."""
    return {
        status: {"model": ErrorOut, "description": ERROR_MEANINGS[status]} for status in statuses
    }


ERROR_MEANINGS = {
    400: "The request could not be read",
    401: "Sign-in required, or a bad or revoked token",
    402: "No questions left on the plan today",
    403: "Not allowed for this role",
    404: "No such object, or not yours",
    409: "In conflict with the current state",
    413: "Request body too large",
    422: "Invalid input: the message says which field and why",
    429: "Too many requests; see Retry-After",
    500: "Our fault; the request id is in the logs",
    502: "A model backend or the payment provider failed",
    503: "Busy, no knowledge loaded, or billing off; see Retry-After where given",
}
# What any operation can answer: bad bodies, auth, limits, and our own failures.
COMMON_ERRORS = error_responses(400, 401, 403, 404, 413, 422, 429, 500, 502, 503)


# --- accounts ------------------------------------------------------------------------------
Event = Literal[
    "header",
    "heeler",
    "tie-down",
    "breakaway",
    "steer-wrestling",
    "barrels",
    "poles",
    "goat-tying",
    "saddle-bronc",
    "bareback",
    "bull-riding",
    "steer-roping",
]
Role = Literal["user", "expert", "admin"]


class StrictModel(BaseModel):
    """Unknown fields are an error, so privileged fields cannot ride along unnoticed."""

    model_config = ConfigDict(extra="forbid")


class RegisterIn(StrictModel):
    email: str = Field(max_length=320)
    password: str = Field(max_length=1024)
    display_name: str = Field(default="", max_length=100)


class LoginIn(StrictModel):
    email: str = Field(max_length=320)
    password: str = Field(max_length=1024)


class RefreshIn(StrictModel):
    refresh_token: str = Field(max_length=200)


class PasswordChangeIn(StrictModel):
    current_password: str = Field(max_length=1024)
    new_password: str = Field(max_length=1024)


class ResetRequestIn(StrictModel):
    email: str = Field(max_length=320)


class ResetConfirmIn(StrictModel):
    token: str = Field(max_length=200)
    new_password: str = Field(max_length=1024)


class TokenOut(BaseModel):
    access_token: str
    refresh_token: str
    token_type: str = "bearer"
    expires_in: int = Field(description="Seconds until the access token expires")


class AcceptedOut(BaseModel):
    status: Literal["accepted"] = "accepted"
    message: str


class UserOut(BaseModel):
    id: int
    email: str
    display_name: str
    role: Role
    skill_level: SkillLevel | None
    events: list[str]
    classification: float | None
    plan: str
    credits: int
    disabled: bool
    created_at: datetime


class MailOut(BaseModel):
    """An outbox row as the admin sees it: where it stands, never its body (a reset mail's
    holds a one-time link)."""

    id: int
    kind: str
    recipient: str
    subject: str
    status: Literal["pending", "sending", "sent", "failed"]
    attempts: int
    last_error: str | None
    next_attempt_at: datetime
    created_at: datetime
    sent_at: datetime | None
    message_id: str


class ProfilePatch(StrictModel):
    """What users may change about themselves. Role, plan and credits are not here."""

    display_name: str | None = Field(default=None, max_length=100)
    skill_level: SkillLevel | None = None
    events: list[Event] | None = Field(default=None, max_length=12)
    classification: float | None = Field(default=None, ge=0, le=10, multiple_of=0.5)


class ApiKeyIn(StrictModel):
    name: str = Field(default="key", max_length=100)


class ApiKeyOut(BaseModel):
    id: int
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="Shown once: store it now")


class AdminUserPatch(StrictModel):
    role: Role | None = None
    disabled: bool | None = None


# --- conversations -------------------------------------------------------------------------
class ConversationOut(BaseModel):
    id: int
    title: str
    created_at: datetime
    updated_at: datetime


class ConversationPage(BaseModel):
    items: list[ConversationOut]
    total: int
    offset: int
    limit: int


class MessageOut(BaseModel):
    id: int
    role: str
    content: str
    sources: list[dict[str, object]]
    backend: str | None
    model: str | None
    metrics: dict[str, object]
    created_at: datetime


class ConversationDetail(ConversationOut):
    messages: list[MessageOut]


class ConversationPatch(StrictModel):
    title: str = Field(min_length=1, max_length=200)


# --- billing -------------------------------------------------------------------------------
class PaymentIn(StrictModel):
    payment_method: str | None = Field(
        default=None,
        max_length=100,
        pattern=r"^[A-Za-z0-9_]+$",
        description="A Stripe PaymentMethod id (pm_...)",
    )


class RefundIn(StrictModel):
    order_id: int = Field(ge=1, le=MAX_ID)
    amount_cents: int | None = Field(
        default=None, ge=1, le=100_000_000, description="Empty: the rest"
    )


# --- learning loop ---------------------------------------------------------------------------
class FeedbackIn(StrictModel):
    rating: Literal["up", "down"]
    comment: str | None = Field(default=None, max_length=2000)
    tags: list[Annotated[str, Field(min_length=1, max_length=40)]] = Field(
        default_factory=list, max_length=10
    )
    feedback_token: str | None = Field(
        default=None, max_length=200, description="A guest's token from the answer"
    )


class FeedbackOut(BaseModel):
    answer_id: int
    rating: str
    comment: str | None
    tags: list[str]


class ReviewIn(StrictModel):
    rating: int = Field(ge=1, le=5)
    corrected_answer: str | None = Field(default=None, max_length=20_000)
    knowledge_gap: str | None = Field(default=None, max_length=2000)
    note: str | None = Field(default=None, max_length=2000)


class ReviewOut(BaseModel):
    id: int
    answer_id: int
    reviewer_id: int
    rating: int
    corrected_answer: str | None
    knowledge_gap: str | None
    note: str | None
    created_at: datetime
