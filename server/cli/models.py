"""`rodeoai models`: list, pull, use and remove the local GGUF models llama.cpp can run.

Only `pull` touches the network, and only when asked; the server never downloads.
"""

from __future__ import annotations

import json
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from server.cli.common import console
from server.config import Settings
from server.errors import AppError
from server.llm import catalog
from server.llm.catalog import BUNDLED, ESTIMATES, SETTING, ModelError
from server.llm.pull import pull

RESTART = "restart `rodeoai serve` to switch"

app = typer.Typer(
    help="Local GGUF models for the llama.cpp backend: list the catalogue of small instruct "
    "models that suit a CPU box, pull one from Hugging Face, use it, remove it.",
    no_args_is_help=True,
)


def _fail(exc: AppError) -> NoReturn:
    console.print(f"[red]error[/red] ({exc.code}): {escape(exc.message)}", soft_wrap=True)
    raise typer.Exit(code=2)


def _gb(size_bytes: object, estimate: object) -> str:
    if isinstance(size_bytes, int):
        return f"{size_bytes / 1e9:.2f} GB"
    return f"~{estimate} GB"


@app.command("list", help=f"Show the catalogue, what is pulled and what is in use.\n\n{ESTIMATES}")
def list_models(
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON")] = False,
) -> None:
    report = catalog.inventory(Settings())
    if as_json:
        print(json.dumps(report, indent=2))
        return
    table = Table("", "name", "params", "size", "RAM", "tok/s", "licence")
    table.add_column("Hugging Face file", overflow="fold")  # folded, never cut: it is copied
    for row in report["models"]:
        mark = "in use" if row["in_use"] else "pulled" if row["pulled"] else ""
        if not mark and row["partial_bytes"]:
            mark = f"{row['partial_bytes'] / 1e6:.0f} MB part"
        source = f"{row['repo_id']}\n{row['filename']}" if row["repo_id"] else row["source"]
        table.add_row(
            mark,
            str(row["name"]),
            f"{row['params_b']}B",
            _gb(row["size_bytes"], row["est_size_gb"]),
            f"~{row['est_ram_gb']} GB",
            f"~{row['est_tokens_per_s']}",
            str(row["licence"]),
            str(source),
        )
    Console().print(table)
    for row in report["models"]:
        if row["note"]:
            print(f"  {row['name']}: {row['note']}")
    print(f"models folder: {report['models_dir']}")
    if report["in_use"] is None:
        console.print(
            f"[yellow]warning[/yellow]: {SETTING}={escape(str(report['setting']))} names no "
            "file: `rodeoai serve` will fail to load its model; run `rodeoai models use NAME`"
        )
    elif report["in_use_name"] is None:
        print(f"in use: {report['in_use']} (not in the catalogue)")
    print("Figures are estimates for 2 CPU cores; see `rodeoai models list --help`.")


@app.command("pull")
def pull_model(
    name: Annotated[str, typer.Argument(help="A catalogue name, as `rodeoai models list` shows")],
    retries: Annotated[
        int, typer.Option(min=0, help="Times a dropped connection is resumed in this run")
    ] = 3,
) -> None:
    """Download NAME from Hugging Face into RODEOAI_MODELS_DIR (default models/).

    Needs a connection to huggingface.co, or HF_ENDPOINT (a mirror); HF_TOKEN is sent if
    set. An interrupted download is kept as a .part file and the next pull continues it
    (HTTP Range). The finished file is checked against the catalogue's SHA-256 or, where
    it has none, the SHA-256 the hub reports; only then does it get its final name.
    Nothing else in RodeoAI downloads."""
    settings = Settings()
    try:
        if name == BUNDLED:
            raise ModelError(
                "the bundled model is installed with RodeoAI; there is nothing to pull",
                code="bundled",
            )
        entry = catalog.find(name)
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
        ) as bar:
            task = bar.add_task(entry.name, total=None)
            result = pull(
                entry,
                settings.models_dir,
                retries=retries,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
    except AppError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        console.print(f"interrupted: run `rodeoai models pull {name}` again to resume")
        raise typer.Exit(code=130) from None
    if result.already_present:
        print(f"{entry.name} is already pulled: {result.path}")
    else:
        resumed = f", resumed at {result.resumed_from:,} bytes" if result.resumed_from else ""
        print(f"pulled {entry.name}: {result.path} ({result.size:,} bytes{resumed})")
        print(f"sha256 {result.sha256} verified")
    print(f"to use it: rodeoai models use {entry.name}")


@app.command("use")
def use_model(
    name: Annotated[
        str,
        typer.Argument(
            help="A pulled catalogue name, `bundled`, or the file name of a .gguf in the "
            "models folder"
        ),
    ],
) -> None:
    """Make `rodeoai serve` load NAME from its next start.

    Writes RODEOAI_LLM_MODEL into the .env file of the current folder (the one the app
    reads), keeping every other line. A running server keeps its model until restarted.
    `use bundled` goes back to the bundled SmolLM2-135M. A model that is not pulled is
    refused."""
    settings = Settings()
    env = catalog.env_file()
    try:
        value, path = catalog.model_file(name, settings)
        if value or env.exists():
            catalog.set_env_value(env, SETTING, value)
    except AppError as exc:
        _fail(exc)
    print(f"{SETTING}={value} in {env.resolve()}: `rodeoai serve` will load {path}")
    print(RESTART)
    _warn_environment(value)


@app.command("remove")
def remove_model(
    name: Annotated[
        str, typer.Argument(help="A catalogue name, or the file name of a .gguf in the folder")
    ],
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Remove it even while in use, and go back to the bundled model"
        ),
    ] = False,
) -> None:
    """Delete a pulled model file and any partial download of it.

    The bundled model cannot be removed; the model in use is refused unless --force, which
    also sets RODEOAI_LLM_MODEL in .env back to the bundled model."""
    settings = Settings()
    try:
        if name == BUNDLED:
            raise ModelError(
                "the bundled model is part of the install and cannot be removed",
                code="bundled",
            )
        custom = name.endswith(".gguf") and "/" not in name
        filename = name if custom else catalog.find(name).filename
        path = settings.models_dir / filename
        parts = catalog.part_files(settings.models_dir, filename)
        if not path.is_file() and not parts:
            raise ModelError(f"{name} is not pulled (no {path})", code="not_pulled")
        in_use = path.is_file() and catalog.same_file(catalog.current_model(settings), path)
        if in_use and not force:
            raise ModelError(
                f"{name} is in use ({SETTING}={settings.llm_model}); run `rodeoai models "
                "use bundled` first, or pass --force",
                code="in_use",
            )
        for each in (path, *parts):
            each.unlink(missing_ok=True)
        if in_use and catalog.setting_in_environment() is None:
            catalog.set_env_value(catalog.env_file(), SETTING, "")
    except AppError as exc:
        _fail(exc)
    print(f"removed {name} ({path})")
    if in_use:
        print(f"{SETTING} reset to the bundled model; {RESTART}")
        _warn_environment("")


def _warn_environment(value: str) -> None:
    """The process environment beats .env: say so when it disagrees with what was written."""
    found = catalog.setting_in_environment()
    if found is not None and found != value:
        console.print(
            f"[yellow]warning[/yellow]: {SETTING}={escape(found)} is set in this environment "
            "and overrides .env; unset it for the change to take effect"
        )
