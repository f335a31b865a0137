"""pgvector's side of the database for the pgvector store (pgvector_store.py): the extension,
the `chunk_vector` table and its HNSW index, bulk writes, and the query.

The table is made on first use, not by a migration: it needs the vector extension (and the
right to create it), which a FAISS deployment must not need, and its dimension is the
configured embedder's, which a migration cannot know. `is_unmapped` in server/db/tables.py
keeps Alembic's comparison of models and database away from it.
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from server.errors import IndexUnavailable

log = logging.getLogger(__name__)

TABLE = "chunk_vector"
HNSW_INDEX = "chunk_vector_hnsw"
SETUP_LOCK = 0x52647656  # advisory lock key of the back-fill and index build ("RdvV")
MAX_DIMENSION = 2000  # pgvector's limit for an indexed vector
BUILD_MEMORY = "1GB"  # maintenance_work_mem for the HNSW build: in memory, not on disk
# The graph's links per node and build-time candidate list. At 100,000 clustered synthetic
# chunks (make bench) pgvector's default ef_construction of 64 gave recall@10 0.82 at
# ef_search 100; 128 gave 0.97 for a build of 29 s instead of 20 s on 2 cores.
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 128
# Inner product, as FAISS scores: `<#>` is its negative, and the index uses vector_ip_ops.
SEARCH_SQL = (
    f"SELECT chunk_id, embedding <#> CAST(:q AS vector) FROM {TABLE} "
    "ORDER BY embedding <#> CAST(:q AS vector) LIMIT :k"
)
# Per query (a transaction): the HNSW candidate list, and the index or an exact scan. The
# planner would scan a small table even when asked for the approximate search.
SEARCH_SETTINGS_SQL = (
    "SELECT set_config('hnsw.ef_search', :ef, true), "
    "set_config('enable_indexscan', :index, true), set_config('enable_seqscan', :scan, true)"
)
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_COPY_TRAILER = struct.pack(">h", -1)


def vector_literal(vector: np.ndarray) -> str:
    """pgvector's text form; repr is exact for a float32 widened to a Python float."""
    return "[" + ",".join(map(repr, vector.astype(np.float32).tolist())) + "]"


def copy_data(ids: Sequence[int], vectors: np.ndarray) -> bytes:
    """Rows for COPY ... (FORMAT BINARY): a bigint, then pgvector's binary form (int16
    dimension, int16 reserved, big-endian float4s). Built by numpy in one pass, where a text
    literal per vector would cost 384 float conversions each way."""
    dimension = vectors.shape[1]
    row = np.dtype(
        [
            ("fields", ">i2"),
            ("id_size", ">i4"),
            ("id", ">i8"),
            ("vector_size", ">i4"),
            ("dimension", ">i2"),
            ("reserved", ">i2"),
            ("vector", ">f4", (dimension,)),
        ]
    )
    rows = np.zeros(len(ids), row)
    rows["fields"], rows["id_size"], rows["id"] = 2, 8, ids
    rows["vector_size"], rows["dimension"], rows["vector"] = 4 + 4 * dimension, dimension, vectors
    return _COPY_HEADER + rows.tobytes() + _COPY_TRAILER


def write_vectors(conn: Connection, ids: Sequence[int], vectors: np.ndarray) -> None:
    """Insert or update vectors in the caller's transaction, leaving alone those already
    equal (no index churn): COPY into a scratch table, then one upsert from it."""
    load = "chunk_vector_load"
    conn.execute(
        text(
            f"CREATE TEMP TABLE {load} (chunk_id bigint, embedding vector({vectors.shape[1]}))"
            " ON COMMIT DROP"
        )
    )
    driver: Any = conn.connection.driver_connection
    with (
        driver.cursor() as cursor,
        cursor.copy(f"COPY {load} (chunk_id, embedding) FROM STDIN (FORMAT BINARY)") as copy,
    ):
        copy.write(copy_data(ids, np.asarray(vectors, dtype=np.float32)))
    conn.execute(
        text(
            f"INSERT INTO {TABLE} (chunk_id, embedding) SELECT chunk_id, embedding FROM {load} "
            "ON CONFLICT (chunk_id) DO UPDATE SET embedding = EXCLUDED.embedding "
            f"WHERE {TABLE}.embedding IS DISTINCT FROM EXCLUDED.embedding"
        )
    )
    conn.execute(text(f"DROP TABLE {load}"))


def ensure_table(conn: Connection, dimension: int) -> bool:
    """The extension and the table, in the caller's transaction (which holds the write lock,
    so workers starting together take turns). True when the table was made."""
    ensure_extension(conn)
    found = conn.execute(
        text(
            "SELECT atttypmod FROM pg_attribute WHERE attrelid = to_regclass(:t) "
            "AND attname = 'embedding'"
        ),
        {"t": TABLE},
    ).scalar()
    if found == dimension:
        return False
    if found is not None:  # another embedder's vectors: refilled from chunk.embedding
        log.warning("pgvector: vectors of dimension %s replaced by %d", found, dimension)
        conn.execute(text(f"DROP TABLE {TABLE}"))
    conn.execute(
        text(
            f"CREATE TABLE {TABLE} (chunk_id bigint PRIMARY KEY REFERENCES chunk (id) "
            f"ON DELETE CASCADE, embedding vector({dimension}) NOT NULL)"
        )
    )
    if conn.execute(text("SELECT NOT EXISTS (SELECT 1 FROM chunk)")).scalar_one():
        conn.execute(text(_index_sql("")))  # empty: cheaper now than after a load
    return True


def ensure_extension(conn: Connection) -> None:
    if conn.execute(text("SELECT 1 FROM pg_extension WHERE extname = 'vector'")).first():
        return
    why = "it is not installed on the PostgreSQL server (install pgvector there)"
    available = "SELECT 1 FROM pg_available_extensions WHERE name = 'vector'"
    if conn.execute(text(available)).first():
        try:
            conn.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
            return
        except DBAPIError as exc:
            why = f"creating it failed: {str(exc.orig).strip().splitlines()[0]}"
    raise IndexUnavailable(
        f"RODEOAI_VECTOR_STORE=pgvector needs the vector extension, but {why}; a superuser "
        "can run CREATE EXTENSION vector in this database, or set RODEOAI_VECTOR_STORE=faiss",
        code="pgvector_unavailable",
    )


def missing(conn: Connection, *, after: int = 0) -> int:
    """Chunks above id `after` without their vector."""
    return int(
        conn.execute(
            text(
                "SELECT count(*) FROM chunk c WHERE c.id > :after AND NOT EXISTS "
                f"(SELECT 1 FROM {TABLE} v WHERE v.chunk_id = c.id)"
            ),
            {"after": after},
        ).scalar_one()
    )


def stored_vectors(engine: Engine) -> int | None:
    """Vectors in the table, or None when there is none yet (for `rodeoai index status`)."""
    with engine.connect() as conn:
        if conn.execute(text("SELECT to_regclass(:t)"), {"t": TABLE}).scalar() is None:
            return None
        return int(conn.execute(text(f"SELECT count(*) FROM {TABLE}")).scalar_one())


def index_valid(conn: Connection) -> bool | None:
    """True: built; False: a build that died (left invalid); None: none."""
    row = conn.execute(
        text("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:i)"),
        {"i": HNSW_INDEX},
    ).first()
    return None if row is None else bool(row[0])


def _index_sql(how: str) -> str:
    return (
        f"CREATE INDEX {how} IF NOT EXISTS {HNSW_INDEX} ON {TABLE} "
        f"USING hnsw (embedding vector_ip_ops) "
        f"WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION})"
    )


def build_index(conn: Connection) -> None:
    """On the set-up lock's autocommit connection: CONCURRENTLY, so ingestion and searches
    go on while it builds (minutes at millions of vectors)."""
    state = index_valid(conn)
    if state is True:
        return
    if state is False:
        conn.execute(text(f"DROP INDEX CONCURRENTLY IF EXISTS {HNSW_INDEX}"))
    started = time.monotonic()
    log.info("pgvector: building the HNSW index")
    conn.execute(text(f"SET maintenance_work_mem = '{BUILD_MEMORY}'"))
    try:
        conn.execute(text(_index_sql("CONCURRENTLY")))
    finally:
        conn.execute(text("RESET maintenance_work_mem"))
    log.info("pgvector: HNSW index built in %.1f s", time.monotonic() - started)


def analyze(conn: Connection) -> None:
    """Fresh statistics for the planner after a bulk load."""
    conn.execute(text(f"ANALYZE {TABLE}"))


@contextmanager
def setup_lock(engine: Engine) -> Iterator[Connection]:
    """One worker fills and indexes at a time; the lock comes with an autocommit connection
    for the index build. Polled with try-lock: a session waiting in pg_advisory_lock holds a
    snapshot that CREATE INDEX CONCURRENTLY in the lock holder would wait for in turn."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        waited = False
        while not conn.execute(
            text("SELECT pg_try_advisory_lock(:k)"), {"k": SETUP_LOCK}
        ).scalar_one():
            if not waited:
                log.info("pgvector: waiting for another worker's back-fill or index build")
                waited = True
            time.sleep(0.5)
        try:
            yield conn
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": SETUP_LOCK})
