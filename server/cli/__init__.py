"""The `rodeoai` command: serve, ingest, remove, sources, search, ask, index."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from server import logs
from server.cli.backup import register as register_backup
from server.cli.common import components as _components
from server.cli.common import console
from server.cli.common import fail as _fail
from server.cli.evaluate import run as evaluate_run
from server.cli.finetune import app as finetune_app
from server.cli.mcp import run as mcp_run
from server.cli.models import app as models_app
from server.cli.report import run as report_run
from server.config import Settings, SkillLevel
from server.errors import AppError
from server.rag.ingest import ENCODE_BATCH

app = typer.Typer(
    help="RodeoAI: an offline rodeo expert that answers with cited sources.",
    no_args_is_help=True,
    add_completion=False,
)
index_app = typer.Typer(help="Inspect or rebuild the FAISS index.", no_args_is_help=True)
app.add_typer(index_app, name="index")
users_app = typer.Typer(help="Manage accounts from the server's shell.", no_args_is_help=True)
app.add_typer(users_app, name="users")
billing_app = typer.Typer(help="Plans, credits and Stripe.", no_args_is_help=True)
app.add_typer(billing_app, name="billing")
db_app = typer.Typer(help="The database schema and its migrations.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.command("eval")(evaluate_run)
app.add_typer(finetune_app, name="finetune")
app.command("report")(report_run)
app.command("mcp")(mcp_run)
app.add_typer(models_app, name="models")
register_backup(app)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address [default: RODEOAI_HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="Port [default: RODEOAI_PORT]")] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="Worker processes. Each loads its own models (memory times N); on SQLite "
            "rate limits are per worker unless RODEOAI_RATE_LIMIT_STORAGE is redis://",
        ),
    ] = 1,
) -> None:
    """Serve the web API (docs at /docs). The port opens at once; /health says "loading"
    while the index opens and, on first run, the starter knowledge loads."""
    # torch's OpenMP pool, once it has run the embedder, slows llama.cpp's threads in the same
    # process (measured on 2 cores: 125 -> 80 tokens/s). One OpenMP thread for torch brings
    # generation back to ~135 tokens/s, at the cost of slower in-server ingestion; the
    # `ingest` command, a separate process, keeps every core.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import uvicorn

    settings = Settings()
    logs.configure(settings.log_level, as_json=settings.json_logs)
    bound = settings.model_copy(update={"host": host or settings.host})
    for warning in bound.unsafe(workers=workers):
        logging.getLogger("server.cli").warning("unsafe setting: %s", warning)
    uvicorn.run(
        "server.main:serve_app",  # a factory, so each worker process builds its own app
        factory=True,
        workers=workers,
        host=host or settings.host,
        port=port or settings.port,
        log_config=None,
        access_log=False,
        # The backstop behind RODEOAI_SHUTDOWN_GRACE_S: streams end themselves by then, and
        # the answers' records are written before the process goes.
        timeout_graceful_shutdown=int(settings.shutdown_grace_s) + 10,
    )


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders to ingest")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON")] = False,
    prune: Annotated[
        bool, typer.Option(help="Remove documents whose files vanished from a given folder")
    ] = True,
) -> None:
    """Add or update .md .txt .pdf .html .vtt .srt .jsonl files; unchanged ones are skipped."""
    components = _components(quiet=True)
    files, _ = components.ingestor.discover(paths)
    with Progress(
        TextColumn("[bold]ingesting"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=console,
        transient=as_json,
    ) as bar:
        task = bar.add_task("", total=len(files))
        # A second bar for the chunks of a large file, which can take minutes alone.
        chunks = bar.add_task("", total=None, visible=False)

        def on_chunks(path: Path, done: int, total: int) -> None:
            big = total > ENCODE_BATCH
            bar.update(
                chunks,
                completed=done,
                total=total,
                visible=big and done < total,
                description=f"chunks of {path.name}",
            )

        summary = components.ingestor.ingest(
            paths,
            prune=prune,
            progress=lambda path, done, total: bar.update(
                task, completed=done, description=path.name
            ),
            chunk_progress=on_chunks,
        )
    for error in summary.errors:
        console.print(f"[yellow]skipped[/yellow] {error['path']}: {error['message']}")
    if as_json:
        print(json.dumps(summary.as_dict(), indent=2))
    else:
        print(summary.line())
    if summary.errors and not (
        summary.added_documents or summary.updated_documents or summary.unchanged_documents
    ):
        raise typer.Exit(code=1)


@app.command()
def remove(
    source: Annotated[str, typer.Argument(help="Source name, as `sources` lists it")],
) -> None:
    """Delete a document and its chunks."""
    components = _components(quiet=True)
    try:
        chunks = components.ingestor.remove(source)
    except AppError as exc:
        _fail(exc)
    print(f"removed {source} ({chunks} chunks)")


@app.command()
def sources(
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON")] = False,
) -> None:
    """List ingested documents."""
    rows = _components(quiet=True).ingestor.documents()
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("source", "title", "kind", "chunks")
    for row in rows:
        table.add_row(str(row["source"]), str(row["title"]), str(row["kind"]), str(row["chunks"]))
    Console().print(table)


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="What to look for")],
    k: Annotated[int, typer.Option("--k", help="How many hits")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON")] = False,
) -> None:
    """Hybrid search (FAISS + bm25) over the knowledge base."""
    components = _components(quiet=True)
    try:
        hits = components.retriever.search(query, k)
    except AppError as exc:
        _fail(exc)
    if as_json:
        print(json.dumps([h.as_dict() for h in hits], indent=2))
        return
    for rank, hit in enumerate(hits, start=1):
        print(
            f"{rank}. {hit.title} - {hit.source}" + (f" ({hit.location})" if hit.location else "")
        )
        print(f"   {hit.text[:200].replace(chr(10), ' ')}...")


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="Your question")],
    skill: Annotated[SkillLevel | None, typer.Option(help="Depth of the answer")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON")] = False,
) -> None:
    """Answer a question with the local model, citing sources."""
    components = _components(quiet=True)
    level = skill or components.settings.default_skill_level
    try:
        answer = asyncio.run(
            components.chat.answer([{"role": "user", "content": question}], skill_level=level)
        )
    except AppError as exc:
        _fail(exc)
    if as_json:
        print(
            json.dumps(
                {
                    "answer": answer.response,
                    "sources": answer.sources,
                    "model": answer.model,
                    "backend": answer.backend,
                    "latency_ms": answer.latency_ms,
                    "chunks_used": answer.chunks_used,
                    "skipped_backends": answer.skipped_backends,
                },
                indent=2,
            )
        )
        return
    print(answer.response)
    print()
    for source in answer.sources:
        where = f" ({source['location']})" if source["location"] else ""
        print(f"[{source['n']}] {source['title']} - {source['source']}{where}")
    console.print(f"[dim]{answer.backend}/{answer.model}, {answer.latency_ms} ms[/dim]")


@index_app.command("rebuild")
def index_rebuild(
    reembed: Annotated[
        bool, typer.Option(help="Re-encode every chunk (after changing the embedder)")
    ] = False,
) -> None:
    """Rebuild the FAISS index from the embeddings stored in SQLite."""
    components = _components(quiet=True)
    index = components.unopened_index
    try:
        if reembed:
            components.make_ingestor(index).reembed()
        else:
            index.check_embedder(components.engine)
            index.rebuild(components.engine)
    except AppError as exc:
        _fail(exc)
    print(f"rebuilt: {index.count} vectors, generation {index.generation}")


@index_app.command("status")
def index_status() -> None:
    """Show the index manifest next to the database counts, and whether it is current."""
    from server.db import counts, current_generation
    from server.rag.vector_index import IndexCorrupt, VectorIndex

    components = _components(quiet=True)
    documents, chunks = counts(components.engine)
    generation = current_generation(components.engine)
    if components.settings.vector_store == "pgvector":
        from server.rag.pgvector_schema import stored_vectors

        _pgvector_status(stored_vectors(components.engine), documents, chunks, generation)
        return
    index = VectorIndex(components.settings.index_dir, embedder="?", dimension=0)
    try:
        found = index.read_manifest()
        manifest: object = found.__dict__
        current = found.generation == generation and found.count == chunks
        state = "current" if current else "stale"
    except IndexCorrupt as exc:
        manifest, state = f"unusable: {exc}", "unusable"
    report: dict[str, object] = {
        "state": state,
        "documents": documents,
        "chunks": chunks,
        "database_generation": generation,
        "manifest": manifest,
    }
    if state != "current":
        report["fix"] = "run `rodeoai index rebuild` (a server rebuilds it at start-up too)"
    print(json.dumps(report, indent=2))


def _pgvector_status(vectors: int | None, documents: int, chunks: int, generation: int) -> None:
    state = "current" if vectors == chunks else "absent" if vectors is None else "stale"
    report: dict[str, object] = {
        "store": "pgvector",
        "state": state,
        "documents": documents,
        "chunks": chunks,
        "vectors": vectors,
        "database_generation": generation,
    }
    if state != "current":
        report["fix"] = (
            "start the server or run `rodeoai index rebuild`: the missing vectors are copied "
            "from the embeddings stored with the chunks"
        )
    print(json.dumps(report, indent=2))


def _read_password(password_stdin: bool) -> str:
    if password_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = typer.prompt("Password", hide_input=True)
    if typer.prompt("Repeat", hide_input=True) != first:
        console.print("[red]the passwords differ[/red]")
        raise typer.Exit(code=2)
    return str(first)


@users_app.command("create-admin")
def users_create_admin(
    email: Annotated[str, typer.Argument(help="The administrator's e-mail")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input")
    ] = False,
) -> None:
    """Create an administrator, or promote an existing account to administrator."""
    components = _components(quiet=True)
    try:
        user = components.accounts.create_admin(email, _read_password(password_stdin))
    except AppError as exc:
        _fail(exc)
    print(f"{user.email} is an administrator")


@users_app.command("list")
def users_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON")] = False,
) -> None:
    """List accounts."""
    components = _components(quiet=True)
    rows = [
        {"id": u.id, "email": u.email, "role": u.role, "disabled": u.disabled, "plan": u.plan}
        for u in components.accounts.list_users(limit=10_000)
    ]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("id", "email", "role", "disabled", "plan")
    for row in rows:
        table.add_row(*(str(v) for v in row.values()))
    Console().print(table)


@users_app.command("set-role")
def users_set_role(
    email: Annotated[str, typer.Argument(help="Account e-mail")],
    role: Annotated[str, typer.Argument(help="user, expert or admin")],
) -> None:
    """Change an account's role."""
    components = _components(quiet=True)
    try:
        user = components.accounts.find_by_email(email)
        components.accounts.admin_update(user.id or 0, role=role)
    except AppError as exc:
        _fail(exc)
    print(f"{email} is now {role}")


@users_app.command("reset-link")
def users_reset_link(email: Annotated[str, typer.Argument(help="Account e-mail")]) -> None:
    """Print a one-hour password reset token to hand to the user (no e-mail needed)."""
    components = _components(quiet=True)
    # Handed over by the administrator, so not mailed as well (even with e-mail on).
    token = components.accounts.request_password_reset(email=email, ip="cli", deliver=False)
    if token is None:
        console.print(f"[red]error[/red]: no account for {email}")
        raise typer.Exit(code=2)
    print(f"reset token (valid one hour): {token}")
    print("POST it with a new password to /api/auth/password-reset/confirm")


@billing_app.command("grant")
def billing_grant(
    email: Annotated[str, typer.Argument(help="Account e-mail")],
    credits: Annotated[int, typer.Option(help="Credits to add (negative takes back)")] = 0,
    plan: Annotated[str | None, typer.Option(help="Set the plan: free or pro")] = None,
    note: Annotated[str, typer.Option(help="Why, for the ledger (e.g. 'paid cash')")] = "",
) -> None:
    """Grant a plan or credits by hand: for boxes that take cash at the office."""
    components = _components(quiet=True)
    try:
        user = components.accounts.find_by_email(email)
        components.billing.grant(user.id or 0, credits=credits, plan=plan, note=note or "cli grant")
    except AppError as exc:
        _fail(exc)
    status = components.billing.status(user)
    print(f"{email}: plan {status['plan']}, {status['credits']} credits")


@billing_app.command("sync")
def billing_sync() -> None:
    """Create the Pro product and monthly plan in Stripe and print the id to configure."""
    components = _components(quiet=True)
    try:
        plan_id = components.payments.sync_plans()
    except AppError as exc:
        _fail(exc)
    print(f"RODEOAI_STRIPE_PRO_PLAN_ID={plan_id}")


@billing_app.command("reconcile")
def billing_reconcile(
    limit: Annotated[
        int, typer.Option(help="Events fetched per page (every page is replayed)")
    ] = 100,
) -> None:
    """Replay recent Stripe events that may have been missed; applied ones are skipped."""
    components = _components(quiet=True)
    try:
        counts = components.payments.reconcile(limit=limit)
    except AppError as exc:
        _fail(exc)
    print(", ".join(f"{n} {k}" for k, n in counts.items()))


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply every pending migration (`rodeoai serve` and the other commands do it too)."""
    from server.db import make_engine, safe_url, schema_revision

    settings = Settings()
    logs.configure("INFO")
    engine = make_engine(settings.engine_url)  # migrates on the way
    print(f"{safe_url(settings.engine_url)}: schema at {schema_revision(engine)}")


@db_app.command("status")
def db_status() -> None:
    """Show the schema revision of the database and the newest one this release has."""
    from alembic.script import ScriptDirectory

    from server.db import MIGRATIONS, make_engine, safe_url, schema_revision

    settings = Settings()
    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    current = None
    if settings.database_url or settings.database_path.exists():  # read as it is
        current = schema_revision(make_engine(settings.engine_url, upgrade=False))
    report = {"database": safe_url(settings.engine_url), "revision": current, "newest": head}
    print(json.dumps(report))
