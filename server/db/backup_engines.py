"""Each engine's half of a backup and a restore, and what a database held at one moment.

SQLite copies through the backup API inside one read transaction; PostgreSQL dumps with
pg_dump joined to a transaction's exported snapshot. Either way the row counts recorded are
read from the very moment copied, so a restore can be checked against them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, inspect
from sqlmodel import SQLModel

from server.db import backup_files as files
from server.db.backup_files import BackupError
from server.db.engine import make_engine
from server.db.pgtools import PgTools
from server.files import atomic_write, fsync_dir

PAGES_PER_STEP = 256  # SQLite pages copied between progress reports (1 MiB at 4 KiB)
Progress = Callable[[int, int], None]  # (done, total): pages on SQLite, tables on PostgreSQL


@dataclass(frozen=True)
class Snapshot:
    """What the database held at the backup's moment, read from that same moment."""

    revision: str | None
    generation: int
    counts: dict[str, int]


def tables() -> set[str]:
    """Every table of the schema (server.db.tables registered them on the metadata)."""
    return set(SQLModel.metadata.tables)


def read(scalar: Callable[[str], Any], present: set[str]) -> Snapshot:
    counts = {t: int(scalar(f'SELECT count(*) FROM "{t}"')) for t in sorted(tables() & present)}
    revision = None
    if "alembic_version" in present:
        revision = scalar("SELECT version_num FROM alembic_version")
    generation = 0
    if "meta" in present:
        generation = int(scalar("SELECT value FROM meta WHERE key = 'generation'") or 0)
    return Snapshot(revision, generation, counts)


def read_connection(conn: Connection) -> Snapshot:
    present = set(inspect(conn).get_table_names())
    return read(lambda sql: conn.exec_driver_sql(sql).scalar(), present)


def expect_counts(found: dict[str, int], expected: dict[str, int]) -> None:
    for table, rows in expected.items():
        if found.get(table) != rows:
            raise BackupError(
                f"the restored {table} has {found.get(table)} rows, the backup says {rows}"
            )


# --- SQLite ---------------------------------------------------------------------------


def _sqlite_read(conn: sqlite3.Connection) -> Snapshot:
    names = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return read(lambda sql: (conn.execute(sql).fetchone() or (None,))[0], {n for (n,) in names})


def _sqlite_check(conn: sqlite3.Connection, what: Path) -> None:
    result = [row[0] for row in conn.execute("PRAGMA integrity_check").fetchall()]
    if result != ["ok"]:
        raise BackupError(f"{what} failed its integrity check: {'; '.join(result[:3])}")


def backup_sqlite(source: Path, target: Path, progress: Progress | None) -> Snapshot:
    if not source.is_file():
        raise BackupError(f"there is no database at {source}")
    src = sqlite3.connect(source, timeout=30, isolation_level=None)
    try:
        # One read transaction for the whole copy: in WAL mode writers go on, and every
        # step copies the same moment instead of restarting after each of their commits.
        src.execute("BEGIN")
        src.execute("SELECT count(*) FROM sqlite_master").fetchone()
        dst = sqlite3.connect(target, isolation_level=None)
        try:
            report = (lambda _s, left, total: progress(total - left, total)) if progress else None
            src.backup(dst, pages=PAGES_PER_STEP, progress=report)
            dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
            _sqlite_check(dst, target)
            snapshot = _sqlite_read(dst)
        finally:
            dst.close()
    finally:
        src.close()
    files.fsync(target)
    return snapshot


def restore_sqlite(backup_file: Path, target: Path, *, sha256: str, counts: dict[str, int]) -> None:
    """Copy the backup beside the database, check it, then swap it in with one rename."""

    def fill(temp: str) -> None:
        if files.copy(backup_file, Path(temp)) != sha256:  # a file at rest: safe to copy
            raise BackupError(f"{backup_file} changed while it was read: try again")
        copy = sqlite3.connect(temp, isolation_level=None)
        try:
            _sqlite_check(copy, backup_file)
            expect_counts(_sqlite_read(copy).counts, counts)
        finally:
            copy.close()
        quiesce_sqlite(target)  # again: a server may have opened it meanwhile

    target.parent.mkdir(parents=True, exist_ok=True)
    mode = target.stat().st_mode & 0o777 if target.exists() else None  # new: private
    atomic_write(target, fill, mode=mode)
    for suffix in ("-wal", "-shm"):  # the old file's, if any: never to meet the new one
        Path(f"{target}{suffix}").unlink(missing_ok=True)
    fsync_dir(target.parent)


def quiesce_sqlite(target: Path) -> None:
    """Take the old file out of WAL mode: SQLite folds the WAL into it and deletes it, so
    none of it can outlive the swap, and refuses while any other connection (a server,
    even an idle one) has the database open."""
    if not target.exists():
        return
    conn = sqlite3.connect(target, timeout=2, isolation_level=None)
    try:
        mode = conn.execute("PRAGMA journal_mode=DELETE").fetchone()[0]
    except sqlite3.OperationalError:
        mode = "busy"
    except sqlite3.DatabaseError:
        mode = "delete"  # not a readable database: nothing in it to keep
    finally:
        conn.close()
    if str(mode).lower() != "delete":
        raise BackupError(f"{target} is in use by another process: stop the server first")


# --- PostgreSQL -----------------------------------------------------------------------


def backup_postgres(url: str, target: Path, progress: Progress | None) -> Snapshot:
    tools = PgTools.find()
    engine = make_engine(url, upgrade=False)
    try:
        with engine.connect() as conn:
            # pg_dump joins this transaction's snapshot, so the counts are of its moment.
            conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                snapshot_id = conn.exec_driver_sql("SELECT pg_export_snapshot()").scalar_one()
                snapshot = read_connection(conn)
                tools.dump(
                    url,
                    target,
                    snapshot=snapshot_id,
                    tables=len(snapshot.counts) + 1,  # and alembic_version
                    progress=progress,
                )
    finally:
        engine.dispose()
    tools.tables_in(target)  # pg_restore --list reads it back
    files.fsync(target)
    return snapshot


def refuse_in_use(conn: Connection) -> None:
    """pg_restore sets lock_timeout to 0: a session holding a table would make it wait for
    ever, so a database that others are connected to is refused, as SQLite's is."""
    others = conn.exec_driver_sql(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
    ).scalar_one()
    if others:
        raise BackupError(
            f"the database is in use by {others} other connection(s): stop the server first"
        )


def restore_postgres(url: str, dump: Path, *, counts: dict[str, int]) -> None:
    tools = PgTools.find()
    in_dump = tools.tables_in(dump)
    engine = make_engine(url, upgrade=False)
    try:
        with engine.begin() as conn:
            refuse_in_use(conn)
            # Tables of a newer schema than the backup's would stop the migrations after;
            # pgvector's chunk_vector (it references chunk) is refilled at the next start.
            ours = tables() | {"alembic_version", "chunk_vector"}
            for table in (set(inspect(conn).get_table_names()) & ours) - in_dump:
                conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{table}" CASCADE')
        engine.dispose()
        tools.restore(url, dump)
        with engine.connect() as conn:
            expect_counts(read_connection(conn).counts, counts)
    finally:
        engine.dispose()
