"""`rodeoai backup DEST` and `rodeoai restore SRC`: the database (SQLite or PostgreSQL)
and its FAISS index, copied while the server answers, and restored only once checked."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, NoReturn, TypeVar

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from server import logs
from server.cli.common import console
from server.config import Settings
from server.db.backup import BackupError, Manifest, backup, restore, row_counts
from server.db.engine import safe_url
from server.errors import AppError

T = TypeVar("T")


def register(app: typer.Typer) -> None:
    app.command("backup")(backup_command)
    app.command("restore")(restore_command)


def backup_command(
    dest: Annotated[
        Path, typer.Argument(metavar="DEST", help="An empty or new folder for the backup")
    ],
) -> None:
    """Back up the database (an online, consistent snapshot: the server may keep
    answering) and the FAISS index into DEST, with a manifest of checksums written last."""
    settings = _settings()
    bar = Progress(
        TextColumn("[bold]backing up"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=console,
    )
    task = bar.add_task("", total=None)

    def report(done: int, total: int) -> None:
        bar.start()  # at the first page: a refusal comes without an empty bar
        bar.update(task, completed=done, total=total)

    try:
        manifest = _guarded(lambda: backup(settings, dest, progress=report))
    finally:
        bar.stop()
    index = "included" if manifest.index else "left out (a restore rebuilds it)"
    print(
        f"backed up {safe_url(settings.engine_url)} ({manifest.engine}, schema "
        f"{manifest.schema_revision}) into {dest}: {_counts(manifest.counts)}; index {index}"
    )


def restore_command(
    src: Annotated[Path, typer.Argument(metavar="SRC", help="A folder `rodeoai backup` wrote")],
    force: Annotated[
        bool, typer.Option("--force", help="Replace a database that is not empty")
    ] = False,
) -> None:
    """Check a backup's manifest and checksums, restore it into the configured database
    (stop the server first), and migrate it to this release's schema."""
    settings = _settings()
    manifest: Manifest = _guarded(lambda: restore(settings, src, force=force))
    counts = _guarded(lambda: row_counts(settings))
    index = "restored" if manifest.index else "rebuilt from the database at the next start"
    print(
        f"restored {src} (taken {manifest.created_at}, schema {manifest.schema_revision}) "
        f"into {safe_url(settings.engine_url)}: {_counts(counts)}; index {index}"
    )


def _settings() -> Settings:
    try:
        settings = Settings()
    except ValueError as exc:  # pydantic's ValidationError: a bad RODEOAI_* value
        _fail(BackupError(f"invalid settings: {str(exc).splitlines()[0]}"))
    logs.configure("WARNING", as_json=settings.json_logs)
    return settings


def _guarded(call: Callable[[], T]) -> T:
    """The call's result; any error ends the command with one line and exit code 2, never
    a traceback."""
    try:
        return call()
    except AppError as exc:
        _fail(exc)
    except Exception as exc:
        _fail(_unexpected(exc))


def _unexpected(exc: Exception) -> AppError:
    first = (str(exc).strip().splitlines() or [""])[0]
    return BackupError(f"{type(exc).__name__}: {first}", code="unexpected")


def _counts(counts: dict[str, int]) -> str:
    rows = [f"{table} {n}" for table, n in sorted(counts.items()) if n and table != "meta"]
    return ", ".join(rows) or "no rows"


def _fail(exc: AppError) -> NoReturn:
    console.print(f"[red]error[/red] ({exc.code}): {escape(exc.message)}", soft_wrap=True)
    raise typer.Exit(code=2)
