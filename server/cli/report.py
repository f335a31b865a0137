"""`rodeoai report`: the admin analytics and the knowledge-gap report, as tables."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from server.cli.common import components, fail
from server.errors import AppError
from server.learning.analytics import DEFAULT_DAYS, MAX_DAYS, MIN_DAYS


def run(
    days: Annotated[
        int,
        typer.Option(
            min=MIN_DAYS,
            max=MAX_DAYS,
            help="Whole UTC days to report on, today included",
        ),
    ] = DEFAULT_DAYS,
    limit: Annotated[int, typer.Option(min=1, max=100, help="Knowledge-gap topics to show")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON")] = False,
) -> None:
    """Analytics from the recorded answers: questions per day, latency percentiles, the
    thumbs-up and feedback rates by backend and by skill level, and the knowledge-gap
    report: questions with weak retrieval, a thumbs-down or an expert's knowledge-gap note,
    grouped by topic, most needed first. It tells you what to write next in knowledge/."""
    try:
        parts = components(quiet=True)
        try:
            report = parts.analytics.report(days, limit=limit)
        finally:
            parts.close()
    except AppError as exc:
        fail(exc)
    if as_json:
        print(json.dumps(report, indent=2, default=_iso))
        return
    _print(report)


def _iso(value: object) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def _print(report: dict[str, Any]) -> None:
    out = Console()  # the tables on stdout
    totals = report["totals"]
    out.print(
        f"[bold]RodeoAI report[/]: the last {report['days']} days (since "
        f"{report['since']:%Y-%m-%d} UTC): {totals['questions']} questions, "
        f"{totals['rated']} rated, {_share(totals['thumbs_up_rate'])} thumbs-up"
        + (" [yellow](truncated: the newest answers only)[/]" if report["truncated"] else "")
    )

    days = Table(title="Questions per day")
    for name in ("date", "questions", "done", "aborted", "failed"):
        days.add_column(name, justify="left" if name == "date" else "right")
    for day in report["per_day"]:
        if day["questions"] or len(report["per_day"]) <= 31:
            days.add_row(
                day["date"], *(str(day[k]) for k in ("questions", "done", "aborted", "failed"))
            )
    out.print(days)

    latency = report["latency"]
    lat = Table(title="Latency of finished answers (ms)")
    for name in ("measure", "p50", "p95", "p99"):
        lat.add_column(name, justify="left" if name == "measure" else "right")
    lat.add_row(
        "answer",
        _ms(latency["latency_ms"]["p50"]),
        _ms(latency["latency_ms"]["p95"]),
        _ms(latency["p99_latency_ms"]),
    )
    first = latency["time_to_first_token_ms"]
    lat.add_row("first token", _ms(first["p50"]), _ms(first["p95"]), "")
    out.print(lat)

    for key, title in (("by_backend", "backend"), ("by_skill_level", "skill_level")):
        table = Table(title=f"Feedback by {title.replace('_', ' ')}")
        table.add_column(title)
        for name in ("answers", "rated", "up", "down", "up rate", "p50 ms", "p95 ms"):
            table.add_column(name, justify="right")
        for row in report[key]:
            table.add_row(
                row[title],
                str(row["answers"]),
                str(row["rated"]),
                str(row["thumbs_up"]),
                str(row["thumbs_down"]),
                _share(row["thumbs_up_rate"]),
                _ms(row["latency_ms"]["p50"]),
                _ms(row["latency_ms"]["p95"]),
            )
        out.print(table)

    gaps = report["gaps"]
    table = Table(
        title="Knowledge gaps: what to write next",
        caption=(
            f"{gaps['gap_questions']} gap questions. Need = {gaps['weights']['expert_gap']} "
            f"per expert gap + {gaps['weights']['thumbs_down']} per thumbs-down + "
            f"{gaps['weights']['weak']} per weak retrieval (best source score under "
            f"{gaps['weak_score_below']:.4f} or none)"
        ),
        show_lines=True,
    )
    table.add_column("#", justify="right")
    table.add_column("topic, and the file to write", overflow="fold", ratio=2)
    table.add_column("need", justify="right")
    table.add_column("qs", justify="right")
    table.add_column("expert/down/weak", justify="right")
    table.add_column("example questions and expert notes", ratio=3)
    for n, group in enumerate(gaps["groups"], 1):
        lines = [f"- {e['question']}" for e in group["examples"][:3]]
        lines += [f"[italic]expert: {note}[/]" for note in group["notes"][:2]]
        table.add_row(
            str(n),
            f"[bold]{group['topic']}[/]\n{group['action']} {group['suggested_file']}",
            str(group["need"]),
            str(group["questions"]),
            f"{group['expert_gaps']}/{group['thumbs_down']}/{group['weak']}",
            "\n".join(lines),
        )
    if gaps["groups"]:
        out.print(table)
    else:
        out.print("No knowledge gaps in this window.")
