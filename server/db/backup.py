"""Online backups and checked restores of the database, on SQLite or PostgreSQL.

A backup folder holds the database (SQLite: `rodeoai.db`, a copy made through the backup API
inside one read transaction, so it is one consistent moment while the server writes on;
PostgreSQL: `rodeoai.dump`, pg_dump's custom format), the FAISS index when it matches that
moment (a cache: without it a restored server rebuilds it from the database), and
`manifest.json`, written last and atomically: a folder without it is an unfinished backup.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

import server
from server.config import Settings
from server.db import backup_engines as engines
from server.db import backup_files as files
from server.db.backup_engines import Progress
from server.db.backup_files import DATABASE_FILES, INDEX, INDEX_MANIFEST, MANIFEST, BackupError
from server.db.engine import MIGRATIONS, make_engine, safe_url

__all__ = ["BackupError", "Manifest", "Progress", "backup", "restore", "row_counts", "verify"]

FORMAT = 1


@dataclass(frozen=True)
class Manifest:
    format: int
    rodeoai_version: str
    engine: str  # sqlite or postgresql
    schema_revision: str | None
    created_at: str
    database_file: str
    database_generation: int
    counts: dict[str, int]  # rows per table at the moment of the backup
    files: dict[str, str]  # path inside the backup -> sha256
    index: dict[str, Any] | None  # the FAISS index manifest, when the index is included

    @classmethod
    def parse(cls, raw: Any) -> Manifest:
        manifest = cls(**{f.name: raw[f.name] for f in fields(cls)})
        if not (
            isinstance(manifest.format, int)
            and manifest.engine in DATABASE_FILES
            and manifest.database_file in manifest.files
            and all(isinstance(v, int) for v in manifest.counts.values())
            and all(isinstance(v, str) for v in manifest.files.values())
        ):
            raise ValueError("fields of the wrong kind")
        return manifest


def backup(settings: Settings, dest: Path, *, progress: Progress | None = None) -> Manifest:
    """Back the database (and the index, when it matches) up into `dest`, which must be
    empty or new. The server may go on answering and writing meanwhile."""
    url = settings.engine_url
    kind = engine_kind(url)
    with _plain_errors(url):
        created = files.prepare_empty(dest)
    try:
        with _plain_errors(url):
            index = files.copy_index(settings.index_dir, dest / INDEX)
            database = dest / DATABASE_FILES[kind]
            if kind == "sqlite":
                snapshot = engines.backup_sqlite(sqlite_path(url), database, progress)
            else:
                snapshot = engines.backup_postgres(url, database, progress)
            matches = index is not None and (
                index.get("generation") == snapshot.generation
                and index.get("count") == snapshot.counts.get("chunk")
            )
            if not matches:  # taken at another moment: a restore rebuilds it instead
                shutil.rmtree(dest / INDEX, ignore_errors=True)
            manifest = Manifest(
                format=FORMAT,
                rodeoai_version=server.__version__,
                engine=kind,
                schema_revision=snapshot.revision,
                created_at=datetime.now(UTC).isoformat(timespec="seconds"),
                database_file=database.name,
                database_generation=snapshot.generation,
                counts=snapshot.counts,
                files=files.checksums(dest, skip=MANIFEST),
                index=index if matches else None,
            )
            files.write_atomic(dest / MANIFEST, json.dumps(asdict(manifest), indent=2).encode())
    except BaseException:
        files.clear(dest, created=created)
        raise
    return manifest


def verify(src: Path) -> Manifest:
    """The backup's manifest, once every file it lists is present and matches its sha256."""
    with _plain_errors(None):
        return _verify(src)


def _verify(src: Path) -> Manifest:
    if not src.is_dir():
        raise BackupError(f"no backup folder at {src}")
    if not (src / MANIFEST).is_file():
        raise BackupError(f"{src} is an unfinished backup (it has no {MANIFEST}): take a new one")
    try:
        manifest = Manifest.parse(json.loads((src / MANIFEST).read_text(encoding="utf-8")))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BackupError(f"{src} is damaged: {MANIFEST} cannot be read ({exc})") from exc
    if manifest.format > FORMAT:
        raise BackupError(
            f"{src} was made by a newer RodeoAI ({manifest.rodeoai_version}): upgrade first"
        )
    for name, digest in manifest.files.items():
        path = files.inside(src, name)
        if path is None or not path.is_file():
            raise BackupError(f"{src} is damaged: {name} is missing")
        if files.sha256(path) != digest:
            raise BackupError(f"{src} is damaged: {name} does not match its checksum")
    return manifest


def restore(settings: Settings, src: Path, *, force: bool = False) -> Manifest:
    """Replace the database with a verified backup, then migrate it to this release's
    schema. A database that holds anything is replaced only with `force`."""
    manifest = verify(src)
    url = settings.engine_url
    kind = engine_kind(url)
    if manifest.engine != kind:
        raise BackupError(
            f"{src} is a {manifest.engine} backup and the database is {kind}: "
            "a backup restores into the same kind of database"
        )
    _check_known_revision(manifest.schema_revision)
    with _plain_errors(url):
        if not force and not _is_empty(url, kind):
            raise BackupError(
                f"the database {safe_url(url)} is not empty: pass --force to replace it"
            )
        if kind == "sqlite":
            engines.quiesce_sqlite(sqlite_path(url))
        else:
            _refuse_in_use(url)
        # From here until the backup's index is in place, no old index can pass for current.
        (settings.index_dir / INDEX_MANIFEST).unlink(missing_ok=True)
        dump = src / manifest.database_file
        if kind == "sqlite":
            digest = manifest.files[manifest.database_file]
            engines.restore_sqlite(dump, sqlite_path(url), sha256=digest, counts=manifest.counts)
        else:
            engines.restore_postgres(url, dump, counts=manifest.counts)
        make_engine(url).dispose()  # the migrations: an older backup comes up to date
        if manifest.index:
            files.install_index(src / INDEX, settings.index_dir, manifest.index)
    return manifest


def row_counts(settings: Settings) -> dict[str, int]:
    """Rows per table in the database now."""
    url = settings.engine_url
    with _plain_errors(url):
        engine = make_engine(url, upgrade=False)
        try:
            with engine.connect() as conn:
                return engines.read_connection(conn).counts
        finally:
            engine.dispose()


def engine_kind(url: str) -> str:
    name = make_url(url).get_backend_name()
    if name not in DATABASE_FILES:
        raise BackupError(f"backups are made of SQLite and PostgreSQL databases, not {name}")
    return name


def sqlite_path(url: str) -> Path:
    database = make_url(url).database
    if not database or database == ":memory:":
        raise BackupError("an in-memory SQLite database has nothing to back up or restore")
    return Path(database)


def _check_known_revision(revision: str | None) -> None:
    from alembic.script import ScriptDirectory

    if revision is None:
        return
    try:
        found = ScriptDirectory(str(MIGRATIONS)).get_revision(revision)
    except Exception:  # alembic raises several kinds for an unknown id
        found = None
    if found is None:
        raise BackupError(
            f"the backup's schema {revision} is newer than this RodeoAI knows: upgrade first"
        )


def _is_empty(url: str, kind: str) -> bool:
    """Nothing but the schema (and its bookkeeping) in the database."""
    if kind == "sqlite" and not sqlite_path(url).exists():
        return True
    engine = make_engine(url, upgrade=False)
    try:
        with engine.connect() as conn:
            present = (set(inspect(conn).get_table_names()) & engines.tables()) - {"meta"}
            for table in present:
                if conn.exec_driver_sql(f'SELECT 1 FROM "{table}" LIMIT 1').first():
                    return False
        return True
    finally:
        engine.dispose()


def _refuse_in_use(url: str) -> None:
    engine = make_engine(url, upgrade=False)
    try:
        with engine.connect() as conn:
            engines.refuse_in_use(conn)
    finally:
        engine.dispose()


@contextmanager
def _plain_errors(url: str | None) -> Iterator[None]:
    """Failures of the database or the disk as one line that names no password."""
    try:
        yield
    except SQLAlchemyError as exc:
        cause = getattr(exc, "orig", None) or exc
        first = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
        raise BackupError(f"{_where(url)}{first}") from exc
    except sqlite3.Error as exc:
        raise BackupError(f"{_where(url)}{exc}") from exc
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        raise BackupError(f"{exc.strerror or exc}{where}") from exc


def _where(url: str | None) -> str:
    return f"database {safe_url(url)}: " if url else ""
