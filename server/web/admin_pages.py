"""The learning loop's admin pages: experiments (start, watch, stop, promote) and analytics,
and the local models. They render from the same services as the admin API and the CLI."""

from __future__ import annotations

from typing import Any, get_args

from fastapi import APIRouter
from fastapi.responses import Response

from server.chat.variants import PromptStyle, RetrievalMode
from server.learning.experiments import BACKENDS
from server.llm import catalog
from server.web.context import PageDep

router = APIRouter(include_in_schema=False)
CHANGES = ("backend", "model", "prompt_style", "top_k", "retrieval")


def changes(variant: dict[str, Any]) -> str:
    """What a variant changes from the server's defaults, in a few words."""
    words = [f"{key.replace('_', ' ')} {variant[key]}" for key in CHANGES if variant.get(key)]
    words = [w for w in words if w not in {"prompt style standard", "retrieval hybrid"}]
    return ", ".join(words) or "the server's defaults"


@router.get("/admin/experiments")
def experiments_page(page: PageDep) -> Response:
    """Every experiment, newest first, with its results; the form to start the next one."""
    if refused := page.refuse_unless_admin("/admin/experiments"):
        return refused
    service = page.components.experiments
    experiments = []
    for listed in service.list()[:20]:
        specs = {v["name"]: v for v in listed["variants"]}
        experiment = service.results(listed["id"])
        for arm in experiment["variants"]:  # results name each arm; the specs say what it is
            arm["spec"] = specs[arm["name"]]
        experiments.append(experiment)
    return page.render(
        "experiments.html",
        experiments=experiments,
        running=next((e for e in experiments if e["status"] == "running"), None),
        default=service.default(),
        backends=BACKENDS,
        prompt_styles=get_args(PromptStyle),
        retrieval_modes=get_args(RetrievalMode),
        changes=changes,
    )


PERIODS = (7, 30, 90, 365)
CHART_W, CHART_H = 600, 120


def day_bars(per_day: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Questions per day as SVG bars (attributes, not styles: the CSP allows no inline
    style), scaled to the busiest day."""
    peak = max((d["questions"] for d in per_day), default=0) or 1
    width = CHART_W / max(len(per_day), 1)
    return [
        {
            "x": round(i * width + width * 0.1, 2),
            "width": round(max(width * 0.8, 1), 2),
            "height": round(d["questions"] / peak * (CHART_H - 20), 2),
            **d,
        }
        for i, d in enumerate(per_day)
    ]


@router.get("/admin/analytics")
def analytics_page(page: PageDep, days: str = "30") -> Response:
    """Questions per day, latency, feedback by backend and skill level, and what to write
    next in the knowledge base."""
    if refused := page.refuse_unless_admin("/admin/analytics"):
        return refused
    # One of the offered periods; a hand-edited address falls back rather than erring.
    period = int(days) if days.isdigit() and int(days) in PERIODS else 30
    report = page.components.analytics.report(period)
    return page.render(
        "analytics.html",
        report=report,
        periods=PERIODS,
        bars=day_bars(report["per_day"]),
        chart=(CHART_W, CHART_H),
    )


@router.get("/admin/models")
def models_page(page: PageDep) -> Response:
    """The model catalogue as `rodeoai models list` shows it: what is pulled, what this
    server runs, and the commands that change it (a download is a job for the shell, with
    its progress bar and resume, not for a web request)."""
    if refused := page.refuse_unless_admin("/admin/models"):
        return refused
    return page.render(
        "models.html",
        report=catalog.inventory(page.components.settings),
        estimates=catalog.ESTIMATES,
        setting=catalog.SETTING,
    )
