"""Analytics for administrators: questions per day, latency, feedback rates by backend and
by skill level, and the knowledge-gap report (what to write next in `knowledge/`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from server.api.deps import AdminUser, ComponentsDep
from server.learning.analytics import DEFAULT_DAYS, MAX_DAYS, MIN_DAYS
from server.schemas import ErrorOut

router = APIRouter(
    prefix="/api/admin/analytics",
    tags=["admin"],
    responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut}},
)

Days = Annotated[
    int,
    Query(
        ge=MIN_DAYS,
        le=MAX_DAYS,
        description="Whole UTC days, today included (today and the days - 1 before it)",
    ),
]
Limit = Annotated[int, Query(ge=1, le=100, description="Knowledge-gap topics to return")]


class Percentiles(BaseModel):
    p50: float | None
    p95: float | None


class DayOut(BaseModel):
    date: str = Field(description="YYYY-MM-DD, UTC")
    questions: int
    done: int
    aborted: int
    failed: int


class TotalsOut(BaseModel):
    questions: int = Field(description="Every recorded answer, finished or not")
    done: int
    aborted: int
    failed: int
    rated: int = Field(description="Finished answers the asker rated")
    thumbs_up: int
    thumbs_down: int
    thumbs_up_rate: float | None = Field(description="thumbs_up / rated")
    feedback_rate: float | None = Field(description="rated / done")


class LatencyOut(BaseModel):
    latency_ms: Percentiles
    time_to_first_token_ms: Percentiles
    p99_latency_ms: float | None


class Rates(BaseModel):
    answers: int = Field(description="Finished answers")
    rated: int
    thumbs_up: int
    thumbs_down: int
    thumbs_up_rate: float | None
    feedback_rate: float | None
    latency_ms: Percentiles
    time_to_first_token_ms: Percentiles


class BackendOut(Rates):
    backend: str


class SkillOut(Rates):
    skill_level: str


class GapExample(BaseModel):
    answer_id: int
    question: str
    reasons: list[Literal["expert_gap", "thumbs_down", "weak"]]
    top_score: float = Field(description="The best source's fused score (0: no source)")
    created_at: datetime


class GapGroup(BaseModel):
    topic: str
    questions: int
    need: int = Field(description="Sum of the weights of its questions' reasons")
    expert_gaps: int
    thumbs_down: int
    weak: int
    examples: list[GapExample]
    notes: list[str] = Field(description="The experts' knowledge-gap notes")
    suggested_file: str
    action: Literal["extend", "new"] = Field(
        description="extend: the best source matched but fell short; new: nothing close"
    )
    latest: datetime


class Weights(BaseModel):
    expert_gap: int
    thumbs_down: int
    weak: int


class GapsBody(BaseModel):
    weak_score_below: float = Field(description="A best-source score under this is weak")
    weights: Weights
    gap_questions: int
    groups: list[GapGroup] = Field(description="Most needed first")


class GapsOut(GapsBody):
    days: int
    since: datetime
    truncated: bool = Field(description="True when the window held more answers than read")


class AnalyticsOut(BaseModel):
    days: int
    since: datetime
    truncated: bool
    totals: TotalsOut
    per_day: list[DayOut] = Field(description="One entry per day, oldest first")
    latency: LatencyOut = Field(description="Over finished answers")
    by_backend: list[BackendOut]
    by_skill_level: list[SkillOut]
    gaps: GapsBody


@router.get("", response_model=AnalyticsOut)
def analytics(
    _admin: AdminUser,
    components: ComponentsDep,
    days: Days = DEFAULT_DAYS,
    limit: Limit = 20,
) -> AnalyticsOut:
    """The last `days` UTC days: questions per day (finished, aborted, failed), latency
    percentiles, thumbs-up and feedback rates by backend and by skill level, and the
    knowledge-gap report."""
    return AnalyticsOut.model_validate(components.analytics.report(days, limit=limit))


@router.get("/gaps", response_model=GapsOut)
def gaps(
    _admin: AdminUser,
    components: ComponentsDep,
    days: Days = DEFAULT_DAYS,
    limit: Limit = 20,
) -> GapsOut:
    """What to write next: questions with weak retrieval, a thumbs-down or an expert's
    knowledge-gap note, grouped by topic and ranked by need (expert gap 3, thumbs-down 2,
    weak retrieval 1; ties by count, then the newest). Topics are the best source's
    document where it matched decently (extend that file), else shared significant words
    (write a new file)."""
    return GapsOut.model_validate(components.analytics.gaps(days, limit=limit))
