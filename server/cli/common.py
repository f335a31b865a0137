"""What every command module shares: the error console, the components, how to fail."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console

from server import logs
from server.components import Components
from server.config import Settings
from server.errors import AppError

console = Console(stderr=True)


def components(*, quiet: bool = False) -> Components:
    settings = Settings()
    logs.configure("WARNING" if quiet else settings.log_level, as_json=settings.json_logs)
    return Components(settings)


def fail(exc: AppError) -> NoReturn:
    console.print(f"[red]error[/red] ({exc.code}): {exc.message}")
    raise typer.Exit(code=2)
