"""The database the suite runs on. By default SQLite: a file in each test's data folder.
With `pytest --database postgresql`, one real PostgreSQL (PyPI `pgserver`: no root, no
system service) starts for the session, and every data folder gets a database of its own,
made the first time that folder's settings are built."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any

ENGINE = "sqlite"  # set by conftest from --database
_server: Any = None


def on_postgres() -> bool:
    return ENGINE == "postgresql"


def _postgres() -> Any:
    global _server
    if _server is None:
        import pgserver

        pgdata = tempfile.mkdtemp(prefix="rodeoai-pg-")
        first = pgserver.get_server(pgdata, cleanup_mode="stop")
        # Each test's app keeps a small pool; the default 100 clients is too tight for a
        # suite that starts servers of its own beside the test process.
        first.psql("ALTER SYSTEM SET max_connections = 400;")
        first.cleanup()
        _server = pgserver.get_server(pgdata, cleanup_mode="stop")
    return _server


def _name(data_dir: Path) -> str:
    return "t_" + hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:24]


def _admin(statement: str) -> None:
    import psycopg

    with psycopg.connect(_postgres().get_uri(), autocommit=True) as connection:
        connection.execute(statement)


def _exists(name: str) -> bool:
    import psycopg

    with psycopg.connect(_postgres().get_uri(), autocommit=True) as connection:
        found = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        return found.fetchone() is not None


# Connections open on the test server above which dropped engines are collected (of 400).
COLLECT_AT = 150


def connections() -> int:
    """Client connections open on the test PostgreSQL server."""
    import psycopg

    with psycopg.connect(_postgres().get_uri(), autocommit=True) as connection:
        row = connection.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
        ).fetchone()
        return int(row[0]) if row else 0


def _url(name: str) -> str:
    return _postgres().get_uri(name).replace("postgresql://", "postgresql+psycopg://", 1)


def database_url(data_dir: Path) -> str | None:
    """The data folder's database URL on PostgreSQL; None on SQLite (the default file)."""
    if not on_postgres():
        return None
    name = _name(data_dir)
    if not _exists(name):
        _admin(f"CREATE DATABASE {name}")
    return _url(name)


def database_env(data_dir: Path) -> dict[str, str]:
    """What a child process needs to use the same database as the tests' own settings."""
    url = database_url(data_dir)
    return {"RODEOAI_DATABASE_URL": url} if url else {}


def freeze(data_dir: Path) -> None:
    """Keep a copy of the folder's database to clone from: PostgreSQL copies a database
    only while nobody is connected to it, and the shared one stays in use."""
    if on_postgres():
        _admin(f"CREATE DATABASE {_name(data_dir)}_frozen TEMPLATE {_name(data_dir)}")


def copy_database(source: Path, target: Path) -> None:
    """The target folder's database as a copy of the source's frozen one (PostgreSQL)."""
    _admin(f"CREATE DATABASE {_name(target)} TEMPLATE {_name(source)}_frozen")


def lexical_rows(engine: Any) -> int:
    """Chunks in the lexical index: FTS5 rows on SQLite, filled tsv columns on PostgreSQL."""
    from sqlalchemy import text

    from server.db import is_sqlite

    table = "chunk_fts" if is_sqlite(engine) else "chunk WHERE tsv IS NOT NULL"
    with engine.connect() as conn:
        return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())
