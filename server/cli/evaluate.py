"""`rodeoai eval`: a question set through the real chat path, one column per variant."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from server.cli.common import components, console, fail
from server.errors import AppError
from server.learning.evaluate import dumps, evaluate, parse_variant, read_questions
from server.learning.experiments import VariantSpec

ROWS = (
    ("recall_at_1", "retrieval recall@1", "share"),
    ("recall_at_5", "retrieval recall@5", "share"),
    ("keyword_hit_rate", "keyword hit rate", "share"),
    ("citation_rate", "answers citing a source", "share"),
    ("extractive_fallback_rate", "extractive fallback", "share"),
)


def run(
    questions: Annotated[
        Path, typer.Argument(help='A JSONL file: {"q": ..., "doc"?: ..., "keywords"?: [...]}')
    ],
    variant: Annotated[
        list[str] | None,
        typer.Option(
            help='A variant as JSON, e.g. \'{"name": "lex", "retrieval": "lexical"}\' (fields: '
            "name, backend, model, prompt_style, top_k, retrieval). Repeat to compare "
            "variants side by side [default: the server's defaults]",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the reports as JSON")] = False,
) -> None:
    """Evaluate answers offline: retrieval recall@1 and @5 (for lines with "doc"), keyword
    hit rate, citation rate, extractive-fallback rate and latency. Nothing is billed or
    recorded."""
    try:
        items = read_questions(questions)
        specs = [parse_variant(v) for v in variant] if variant else [VariantSpec(name="default")]
        if len({s.name for s in specs}) != len(specs):
            raise AppError("each --variant needs its own name", code="invalid_variant")
        parts = components(quiet=True)
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as bar:
            tasks = {s.name: bar.add_task(f"variant {s.name}", total=len(items)) for s in specs}
            reports = asyncio.run(
                evaluate(
                    parts.chat,
                    items,
                    specs,
                    progress=lambda name, done: bar.update(tasks[name], completed=done),
                )
            )
    except AppError as exc:
        fail(exc)
    if as_json:
        print(dumps(reports))
        return
    _table(reports, len(items))


def _table(reports: list[dict[str, Any]], count: int) -> None:
    table = Table(title=f"Evaluation: {count} questions")
    table.add_column("measure")
    for report in reports:
        table.add_column(report["variant"], justify="right")
    for key, label, _ in ROWS:
        table.add_row(label, *(_share(r[key]) for r in reports))
    table.add_row(
        "sentences dropped per answer",
        *(f"{r['sentences_dropped_per_answer'] or 0:.2f}" for r in reports),
    )
    for q in ("p50", "p95"):
        table.add_row(f"latency {q} (ms)", *(f"{r['latency_ms'][q] or 0:.0f}" for r in reports))
    Console().print(table)  # the table on stdout, progress and warnings on stderr
    for report in reports:
        for miss in report["retrieval_misses"]:
            console.print(f"[yellow]{report['variant']}: document not in the top 5[/] for {miss!r}")


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"
