"""Feedback from the asker, and expert review of answers."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query

from server.api.deps import AdminUser, ComponentsDep, ObjectId, OptionalPrincipal, ReviewerUser
from server.schemas import ErrorOut, FeedbackIn, FeedbackOut, ReviewIn, ReviewOut

router = APIRouter(tags=["learning"], responses={404: {"model": ErrorOut}})


@router.post("/api/answers/{answer_id}/feedback", response_model=FeedbackOut)
def give_feedback(
    answer_id: ObjectId, body: FeedbackIn, principal: OptionalPrincipal, components: ComponentsDep
) -> FeedbackOut:
    """Thumbs up or down, with an optional comment and tags. Only the asker may rate (a
    guest with the answer's `feedback_token`); rating again replaces the earlier rating."""
    user = principal.user
    row = components.feedback.rate(
        answer_id,
        user_id=user.id if user else None,
        token=body.feedback_token,
        rating=body.rating,
        comment=body.comment,
        tags=body.tags,
    )
    return FeedbackOut(
        answer_id=row.answer_id,
        rating=row.rating,
        comment=row.comment,
        tags=json.loads(row.tags_json),
    )


@router.get("/api/review/queue", responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut}})
def review_queue(
    _reviewer: ReviewerUser,
    components: ComponentsDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, list[dict[str, Any]]]:
    """Unreviewed answers by need: thumbs-down first, then the weakest retrieval, then the
    oldest. Experts and administrators."""
    return {"items": components.review.queue(limit=limit)}


@router.post(
    "/api/review/{answer_id}",
    response_model=ReviewOut,
    responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut}},
)
def review_answer(
    answer_id: ObjectId, body: ReviewIn, reviewer: ReviewerUser, components: ComponentsDep
) -> ReviewOut:
    """An expert's verdict: a 1-5 rating, and optionally the corrected answer, the knowledge
    the base lacked, and a note."""
    review = components.review.submit(answer_id, reviewer_id=reviewer.id or 0, **body.model_dump())
    return ReviewOut.model_validate(review, from_attributes=True)


@router.get("/api/admin/review-activity", tags=["admin"])
def review_activity(_admin: AdminUser, components: ComponentsDep) -> list[dict[str, Any]]:
    """Each reviewer's number of reviews and the latest one."""
    return components.review.activity()
