"""The fine-tuning data set, for administrators: the same export as `rodeoai finetune
export`, as JSON."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query

from server.api.deps import AdminUser, ComponentsDep
from server.config import SkillLevel
from server.learning.finetune import ExportFilters
from server.schemas import ErrorOut

router = APIRouter(
    prefix="/api/admin/finetune",
    tags=["admin"],
    responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut}},
)


@router.get("/export", responses={422: {"model": ErrorOut}})
def export_dataset(
    _admin: AdminUser,
    components: ComponentsDep,
    min_rating: Annotated[
        int | None, Query(ge=1, le=5, description="Newest expert review at least this")
    ] = None,
    thumbs_up: Annotated[bool, Query(description="Only answers rated thumbs-up")] = False,
    since: Annotated[date | datetime | None, Query(description="ISO date or time")] = None,
    until: Annotated[
        date | datetime | None, Query(description="ISO date (inclusive) or time")
    ] = None,
    skill: Annotated[SkillLevel | None, Query()] = None,
    validation: Annotated[float, Query(ge=0.0, le=0.5, description="Held-out share")] = 0.1,
    seed: Annotated[int, Query(ge=0, le=2**31 - 1, description="Seed of the split")] = 0,
    model: Annotated[
        str | None, Query(max_length=200, description="Model to price and size for")
    ] = None,
    epochs: Annotated[int, Query(ge=1, le=50, description="Epochs the estimate assumes")] = 3,
    price_per_million: Annotated[
        float | None, Query(ge=0, le=1_000_000, description="USD per million training tokens")
    ] = None,
) -> dict[str, Any]:
    """Recorded answers as OpenAI chat fine-tuning examples: `train` and `validation`
    (each line of train.jsonl and validation.jsonl) and the `report` (counts, estimated
    tokens and cost, warnings). The expert's corrected answer replaces the original;
    thumbs-down answers, answers an expert rated 2 or less, and extractive answers are
    left out unless corrected. No account id, conversation id or e-mail is included."""
    filters = ExportFilters(
        min_rating=min_rating,
        thumbs_up=thumbs_up,
        since=since,
        until=until,
        skill=skill,
        validation=validation,
        seed=seed,
        model=model or components.settings.finetune_base_model,
        epochs=epochs,
        price_per_million=price_per_million,
    )
    result = components.finetune.export(filters)
    return {"report": result.report, "train": result.train, "validation": result.validation}
