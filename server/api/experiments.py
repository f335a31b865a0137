"""A/B experiments, for administrators: start one, watch its results, stop it, promote the
winner."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from server.api.deps import AdminUser, ComponentsDep, ObjectId
from server.learning.experiments import ExperimentIn
from server.schemas import ErrorOut

router = APIRouter(
    prefix="/api/admin/experiments",
    tags=["admin"],
    responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut}},
)
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorOut}}


class PromoteIn(BaseModel):
    variant: str = Field(min_length=1, max_length=40)


@router.post(
    "",
    status_code=201,
    responses={409: {"model": ErrorOut, "description": "Another experiment is running"}},
)
def start_experiment(
    body: ExperimentIn, _admin: AdminUser, components: ComponentsDep
) -> dict[str, Any]:
    """Start splitting questions between variants by weight. Each asker (an account, or a
    guest's address) keeps one variant while it runs. One experiment runs at a time."""
    return components.experiments.create(body)


@router.get("")
def list_experiments(_admin: AdminUser, components: ComponentsDep) -> list[dict[str, Any]]:
    return components.experiments.list()


@router.get("/{experiment_id}", responses=NOT_FOUND)
def get_experiment(
    experiment_id: ObjectId, _admin: AdminUser, components: ComponentsDep
) -> dict[str, Any]:
    return components.experiments.get(experiment_id)


@router.get("/{experiment_id}/results", responses=NOT_FOUND)
def experiment_results(
    experiment_id: ObjectId, _admin: AdminUser, components: ComponentsDep
) -> dict[str, Any]:
    """Per variant: answers, thumbs-up rate, mean expert rating, latency and time to first
    token (p50, p95); and each variant against the first, with a two-proportion z-test on
    the thumbs-up rate and a verdict in plain words."""
    return components.experiments.results(experiment_id)


@router.post("/{experiment_id}/stop", responses=NOT_FOUND)
def stop_experiment(
    experiment_id: ObjectId, _admin: AdminUser, components: ComponentsDep
) -> dict[str, Any]:
    """Stop it: every question is answered the default way again. Stopping twice is fine."""
    return components.experiments.stop(experiment_id)


@router.post("/{experiment_id}/promote", responses=NOT_FOUND)
def promote_variant(
    experiment_id: ObjectId, body: PromoteIn, _admin: AdminUser, components: ComponentsDep
) -> dict[str, Any]:
    """Stop it (if it runs) and make one variant how every question is answered."""
    return components.experiments.stop(experiment_id, winner=body.variant)
