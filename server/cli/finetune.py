"""`rodeoai finetune`: export recorded answers as an OpenAI fine-tuning data set, run the
job on OpenAI, and answer with the fine-tuned model (retrieval still runs: fine-tuned
model plus RAG)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from server.cli.common import components, console, fail
from server.config import SkillLevel
from server.errors import AppError, InvalidInput
from server.learning.finetune import ExportFilters, parse_when, write_export

app = typer.Typer(
    help="Fine-tune an OpenAI model on reviewed answers: export, submit, status, use.",
    no_args_is_help=True,
)


@app.command("export")
def export(
    out_dir: Annotated[
        Path, typer.Argument(help="Folder for train.jsonl, validation.jsonl and report.json")
    ],
    min_rating: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=5,
            help="Only answers whose newest expert review rates them at least N (1-5); "
            "unreviewed answers are left out",
        ),
    ] = None,
    thumbs_up: Annotated[
        bool, typer.Option("--thumbs-up", help="Only answers the asker marked thumbs-up")
    ] = False,
    since: Annotated[
        str | None, typer.Option(help="Only answers from this ISO date or time on (2026-05-01)")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Only answers up to this ISO date (inclusive) or time")
    ] = None,
    skill: Annotated[SkillLevel | None, typer.Option(help="Only answers at this skill level")] = (
        None
    ),
    validation: Annotated[
        float,
        typer.Option(min=0.0, max=0.5, help="Share of examples held out for validation (0-0.5)"),
    ] = 0.1,
    seed: Annotated[
        int, typer.Option(min=0, help="Seed of the split: the same seed gives the same split")
    ] = 0,
    model: Annotated[
        str | None,
        typer.Option(help="Model to price and size for (default: RODEOAI_FINETUNE_BASE_MODEL)"),
    ] = None,
    epochs: Annotated[
        int, typer.Option(min=1, max=50, help="Epochs assumed by the cost estimate")
    ] = 3,
    price_per_million: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=1_000_000.0,
            help="USD per million training tokens (default: OpenAI's published price)",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON")] = False,
) -> None:
    """Write train.jsonl, validation.jsonl and report.json from the recorded answers.

    Examples are OpenAI chat examples (system, user, assistant), with the expert's
    corrected answer in place of the original; without duplicates, e-mails or account
    ids; split deterministically; checked against OpenAI's format. report.json gives the
    counts, estimated tokens and cost. Without a correction, thumbs-down answers, answers
    an expert rated 2 or less, and extractive answers are never exported."""
    try:
        parts = components(quiet=True)
        filters = ExportFilters(
            min_rating=min_rating,
            thumbs_up=thumbs_up,
            since=parse_when(since, "since"),
            until=parse_when(until, "until"),
            skill=skill,
            validation=validation,
            seed=seed,
            model=model or parts.settings.finetune_base_model,
            epochs=epochs,
            price_per_million=price_per_million,
        )
        if out_dir.exists() and not out_dir.is_dir():  # before the work, not after it
            raise AppError(f"{out_dir} is a file, not a folder", code="not_a_directory")
        result = parts.finetune.export(filters)
        write_export(result, out_dir)
    except ValidationError as exc:  # what typer's own checks do not cover (a long --model)
        fail(InvalidInput(exc.errors()[0]["msg"], code="invalid_input"))
    except AppError as exc:
        fail(exc)
    report = result.report
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        counts, tokens, cost = report["counts"], report["tokens"], report["cost"]
        print(
            f"{counts['train']} training and {counts['validation']} validation examples "
            f"({counts['corrected_answers_used']} corrected by experts) in {out_dir}"
        )
        print(f"{tokens['train']} training tokens (estimated with {tokens['tokenizer']})")
        if cost["estimated_usd"] is not None:
            print(
                f"estimated training cost: ${cost['estimated_usd']:.2f} "
                f"({cost['epochs']} epochs of {cost['model']})"
            )
        left_out = ", ".join(f"{n} {why}" for why, n in counts["excluded"].items())
        if left_out:
            console.print(f"[dim]left out: {left_out}[/dim]")
    for warning in report["warnings"]:
        console.print(f"[yellow]warning[/yellow]: {warning}")


@app.command("submit")
def submit(
    out_dir: Annotated[Path, typer.Argument(help="The folder `rodeoai finetune export` wrote")],
    model: Annotated[
        str | None,
        typer.Option(help="Model to fine-tune (default: RODEOAI_FINETUNE_BASE_MODEL)"),
    ] = None,
    suffix: Annotated[
        str | None, typer.Option(help="Added to the fine-tuned model's name (up to 64 characters)")
    ] = "rodeoai",
    as_json: Annotated[bool, typer.Option("--json", help="Print the job as JSON")] = False,
) -> None:
    """Upload an export to OpenAI and create the fine-tuning job.

    The files are checked first; validation.jsonl goes along when it has examples. Needs
    RODEOAI_OPENAI_API_KEY (or RODEOAI_OPENAI_BASE_URL for a server with the same API)."""
    try:
        job = components(quiet=True).finetune_jobs.submit(out_dir, model=model, suffix=suffix)
    except AppError as exc:
        fail(exc)
    if as_json:
        print(json.dumps(job, indent=2))
        return
    print(f"job {job['id']} {job['status']}: fine-tuning {job['model']}")
    print(f"follow it with `rodeoai finetune status {job['id']}`")


@app.command("status")
def status(
    job: Annotated[
        str | None, typer.Argument(help="A job id (ftjob-...); without it, list the jobs")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON")] = False,
) -> None:
    """List the fine-tuning jobs, or show one job and its newest events."""
    try:
        jobs = components(quiet=True).finetune_jobs
        found: Any = jobs.get(job) if job else jobs.list()
    except AppError as exc:
        fail(exc)
    if as_json:
        print(json.dumps(found, indent=2))
        return
    if job is None:
        table = Table("job", "status", "model", "fine-tuned model", "created")
        for row in found:
            table.add_row(
                row["id"],
                row["status"],
                row["model"],
                row["fine_tuned_model"] or "",
                row["created_at"],
            )
        Console().print(table)
        return
    print(f"job {found['id']}: {found['status']}, {found['model']}")
    if found["fine_tuned_model"]:
        print(f"model: {found['fine_tuned_model']} (`rodeoai finetune use {found['id']}`)")
    if found["error"]:
        print(f"error: {found['error']}")
    for event in found["events"]:
        print(f"{event['created_at']} {event['level']}: {event['message']}")


@app.command("use")
def use(job: Annotated[str, typer.Argument(help="A succeeded job's id (ftjob-...)")]) -> None:
    """Answer with a succeeded job's fine-tuned model (plus retrieval, as always).

    Every question outside an experiment goes to the OpenAI backend with that model.
    Refused until the job succeeded, and while an experiment runs (stop it first)."""
    try:
        used = components(quiet=True).finetune_jobs.use(job)
    except AppError as exc:
        fail(exc)
    variant = used["default_variant"]
    print(f"questions are now answered by {variant['model']} (the openai backend) with RAG")
    for warning in used["warnings"]:
        console.print(f"[yellow]warning[/yellow]: {warning}")
