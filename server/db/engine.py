"""Engines from a URL, migrations at start, and sessions with per-dialect write locking.

- SQLite, the default (a file in the data folder): WAL, full sync, foreign keys on, and a
  writer takes the lock up front with BEGIN IMMEDIATE.
- PostgreSQL (`postgresql+psycopg://...`): a pool, and a writer takes one
  transaction-level advisory lock. That is SQLite's rule, one writer at a time, so every
  read-then-write in the domains (a quota count, the last admin, a Stripe event seen once)
  holds on both engines. Readers never wait for it, and it ends with the transaction, so
  a crashed worker cannot leave it held.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlmodel import Session, create_engine

from server.db.locks import beside
from server.db.tables import Meta
from server.errors import InvalidInput

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
BASELINE = "0001"  # the schema of every release before migrations existed
WRITE_LOCK = 0x526F6465  # the advisory lock key PostgreSQL writers take ("Rode")


def make_engine(url: str, *, upgrade: bool = True) -> Engine:
    """An engine for `url`, with the schema migrated to the newest revision unless told not."""
    if make_url(url).get_backend_name() == "sqlite":
        engine = _sqlite_engine(url)
        database = make_url(url).database
        if upgrade and database and database != ":memory:":
            with beside(database, ".migrate-lock"):  # workers starting together take turns
                migrate(engine)
            upgrade = False
    else:  # UTC sessions: timestamps are stored without a zone and always mean UTC.
        engine = create_engine(
            url,
            pool_pre_ping=True,
            pool_size=10,
            max_overflow=20,
            connect_args={"options": "-c timezone=UTC"},
        )
    event.listen(engine, "before_cursor_execute", _refuse_nul)
    if upgrade:
        migrate(engine)
    return engine


def _refuse_nul(
    _conn: Any, _cursor: Any, _sql: str, parameters: Any, _context: Any, _many: bool
) -> None:
    """PostgreSQL cannot store a NUL character in text, and SQLite would keep it where no
    reader expects one: both refuse it the same way, as bad input, never as a 500."""
    if _holds_nul(parameters):
        raise InvalidInput("text may not contain NUL characters", code="nul_character")


def _holds_nul(parameters: Any) -> bool:
    """Parameters come as a dict, a tuple, or a list of either (batched inserts)."""
    if isinstance(parameters, str):
        return "\x00" in parameters
    if isinstance(parameters, dict):
        parameters = parameters.values()
    elif not isinstance(parameters, list | tuple):
        return False
    return any(_holds_nul(value) for value in parameters)


def _sqlite_engine(url: str) -> Engine:
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Autocommit at the driver level; SQLAlchemy's "begin" hook below issues BEGIN.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Writers take the lock up front: a deferred BEGIN that later upgrades to a
        # write lock fails with SQLITE_BUSY under contention instead of waiting.
        immediate = conn.get_execution_options().get("write_lock", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def safe_url(url: str) -> str:
    """The URL to show: a SQLite file as its path, any other database without its password."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return parsed.database or ":memory:"
    return parsed.render_as_string(hide_password=True)


def is_sqlite(bind: Engine | Connection) -> bool:
    return bind.dialect.name == "sqlite"


def _take_write_lock(connection: Connection) -> None:
    """PostgreSQL's half of write locking; on SQLite, BEGIN IMMEDIATE already holds it."""
    if not is_sqlite(connection):
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": WRITE_LOCK})


def alembic_config(connection: Any) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def schema_revision(engine: Engine) -> str | None:
    """The migration the database is at; None before migrations (or with no database)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str:
    """The newest migration this release ships."""
    from alembic.script import ScriptDirectory

    return str(ScriptDirectory.from_config(alembic_config(None)).get_current_head())


def migrate(engine: Engine) -> str:
    """Bring the schema to the newest migration in one transaction that holds the write
    lock, so workers starting together take turns. A database from before migrations
    (tables, no version) is stamped at the baseline first, which is its schema."""
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    with engine.execution_options(write_lock=True).begin() as connection:
        _take_write_lock(connection)
        config = alembic_config(connection)
        tables = set(inspect(connection).get_table_names())
        before = MigrationContext.configure(connection).get_current_revision()
        if before is None and "document" in tables:
            command.stamp(config, BASELINE)
            log.info("database from before migrations: recorded as baseline %s", BASELINE)
            before = BASELINE
        head = ScriptDirectory.from_config(config).get_current_head()
        if before == head:
            return "current"
        command.upgrade(config, "head")
    log.info("database schema upgraded from %s to %s", before or "empty", head)
    return "upgraded"


@contextmanager
def read_session(engine: Engine) -> Iterator[Session]:
    with Session(engine, expire_on_commit=False) as session:
        yield session


@contextmanager
def write_session(engine: Engine) -> Iterator[Session]:
    """A session that holds the write lock from its first statement and commits on exit."""
    with Session(engine.execution_options(write_lock=True), expire_on_commit=False) as s:
        _take_write_lock(s.connection())
        yield s
        s.commit()


def get_meta(session: Session, key: str, default: str | None = None) -> str | None:
    row = session.get(Meta, key)
    return row.value if row else default


def set_meta(session: Session, key: str, value: str) -> None:
    row = session.get(Meta, key)
    if row:
        row.value = value
    else:
        session.add(Meta(key=key, value=value))


def bump_generation(session: Session) -> int:
    """Each committed change to chunks gets a new generation number; the index records it."""
    generation = int(get_meta(session, "generation", "0") or 0) + 1
    set_meta(session, "generation", str(generation))
    return generation


def current_generation(engine: Engine) -> int:
    with engine.connect() as conn:
        row = conn.execute(text("SELECT value FROM meta WHERE key = 'generation'")).first()
    return int(row[0]) if row else 0


def chunk_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM chunk")).scalar_one())


def counts(engine: Engine) -> tuple[int, int]:
    """(documents, chunks)."""
    with engine.connect() as conn:
        docs = conn.execute(text("SELECT count(*) FROM document")).scalar_one()
        chunks = conn.execute(text("SELECT count(*) FROM chunk")).scalar_one()
    return int(docs), int(chunks)
