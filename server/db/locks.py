"""The ingestion lock: one writer ingests at a time, across threads, workers and replicas.

Ingestion holds it for minutes (parsing, encoding, a transaction per document), so it is not
the write lock, which every short write takes and which must never wait behind an upload.

- PostgreSQL: a session-level advisory lock, on a connection kept for the lock's lifetime.
  Replicas on other machines share it, and PostgreSQL frees it when that connection ends,
  so a worker killed mid-ingestion cannot leave it held.
- SQLite: the database is one file on one machine, locked by the kernel like SQLite's own
  locks, so the ingestion lock is an advisory lock on a file beside it. The kernel frees it
  with a killed process too.
"""

from __future__ import annotations

import fcntl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, text

INGEST_LOCK = 0x52646F49  # the advisory lock key for ingestion ("RdoI")
_in_memory = threading.Lock()  # an in-memory SQLite database has no file to lock beside


@contextmanager
def ingest_lock(engine: Engine) -> Iterator[None]:
    """Block until no other ingestion runs, then hold the lock for the `with` block."""
    if engine.dialect.name != "sqlite":
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": INGEST_LOCK})
            connection.commit()  # the lock outlives transactions; keep none open meanwhile
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": INGEST_LOCK})
                connection.commit()
        return
    database = engine.url.database
    if not database or database == ":memory:":
        with _in_memory:
            yield
        return
    with beside(database, ".ingest-lock"):
        yield


@contextmanager
def beside(database: str, suffix: str) -> Iterator[None]:
    """An exclusive lock on a file next to a SQLite database, for work that must not overlap
    across processes: ingestion, and a new database's first connections and migrations
    (two workers creating one file at once could see "database is locked")."""
    path = Path(database).with_name(Path(database).name + suffix)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:  # each open is its own lock: threads wait for each other
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield  # closing the file releases the lock


def ingest_running(engine: Engine) -> bool:
    """Whether some process holds the ingestion lock now (for status pages and tests)."""
    if engine.dialect.name != "sqlite":
        with engine.connect() as connection:
            got = connection.execute(
                text("SELECT pg_try_advisory_lock(:key)"), {"key": INGEST_LOCK}
            ).scalar_one()
            if got:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": INGEST_LOCK})
            connection.commit()
        return not got
    database = engine.url.database
    if not database or database == ":memory:":
        return _in_memory.locked()
    path = Path(database).with_name(Path(database).name + ".ingest-lock")
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
    return False
