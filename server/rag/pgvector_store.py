"""Chunk vectors in PostgreSQL (pgvector) under an HNSW index: one index that every replica
shares, where FAISS keeps a copy in each worker's memory (RODEOAI_VECTOR_STORE=pgvector).

- `chunk_vector` holds a copy of each `chunk.embedding`, written in the ingestion's own
  transaction (`stage`) and deleted with its chunk by the foreign key's cascade, so the
  database stays the one source of truth and no file needs saving.
- Scores are inner products on the L2-normalised embeddings, as FAISS's. Each query sets
  `hnsw.ef_search` (pgvector's default of 40 would cap recall). Below
  RODEOAI_VECTOR_ANN_MIN_CHUNKS the search is exact, as FAISS's is: the query skips the
  index and scans (the HNSW graph missed 1 of the 40 best for 1 of 83 questions on the
  starter knowledge).
- A database switching from FAISS: `open` copies the missing vectors from `chunk.embedding`
  (no re-encoding) in batches with a progress log, then builds the index CONCURRENTLY, so
  writes go on meanwhile. One worker does it under a lock; the others wait and find it done.
"""

from __future__ import annotations

import logging
import threading

import numpy as np
from sqlalchemy import Connection, Engine, text

from server.db import current_generation, write_session
from server.errors import IndexUnavailable
from server.rag import pgvector_schema as schema
from server.rag.vector_index import ANN_MIN_CHUNKS
from server.rag.vector_store import check_embedder

log = logging.getLogger(__name__)

EF_SEARCH = 100  # candidates the HNSW search keeps: recall@10 in `make bench`
MAX_EF_SEARCH = 1000  # pgvector's upper bound
BATCH = 2000  # vectors per back-fill transaction: each holds the write lock briefly


class PgVectorStore:
    """The vector store (server/rag/vector_store.py) as a table in PostgreSQL."""

    kind = "pgvector"

    def __init__(
        self,
        engine: Engine,
        *,
        embedder: str,
        dimension: int,
        ann_min_chunks: int = ANN_MIN_CHUNKS,
        ef_search: int = EF_SEARCH,
    ) -> None:
        if dimension > schema.MAX_DIMENSION:
            raise IndexUnavailable(
                f"pgvector indexes at most {schema.MAX_DIMENSION} dimensions and the embedder "
                f"has {dimension}; use RODEOAI_VECTOR_STORE=faiss",
                code="pgvector_dimension",
            )
        self.engine = engine
        self.embedder = embedder
        self.dimension = dimension
        self.ann_min_chunks = ann_min_chunks
        self.ef_search = ef_search
        self.generation = -1
        self._count = 0
        self._watermark = 0  # chunks up to this id were checked for a vector
        self._table_ready = False
        self._lock = threading.Lock()

    @property
    def count(self) -> int:
        return self._count

    @property
    def approximate(self) -> bool:
        return self._count >= self.ann_min_chunks

    # --- queries ------------------------------------------------------------------------
    def search_settings(self, k: int) -> dict[str, str]:
        """What a query of k sets: HNSW's candidate list, and the index or an exact scan."""
        approximate = self.approximate
        return {
            "ef": str(min(MAX_EF_SEARCH, max(self.ef_search, k))),
            "index": "on" if approximate else "off",
            "scan": "off" if approximate else "on",
        }

    def search(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        with self.engine.begin() as conn:
            conn.execute(text(schema.SEARCH_SETTINGS_SQL), self.search_settings(k))
            rows = conn.execute(
                text(schema.SEARCH_SQL), {"q": schema.vector_literal(vector), "k": k}
            ).all()
        return [(int(chunk_id), -float(distance)) for chunk_id, distance in rows]

    # --- changes ------------------------------------------------------------------------
    def stage(self, connection: Connection, *, add_ids: list[int], add_vectors: np.ndarray) -> None:
        if not self._table_ready:  # a process that never opened the store (the CLI)
            schema.ensure_table(connection, self.dimension)
            self._table_ready = True
        if add_ids:
            schema.write_vectors(connection, add_ids, add_vectors)

    def follows(self, generation: int) -> bool:
        return True  # the vectors committed with the chunks: nothing to catch up in memory

    def apply(
        self, *, remove: list[int], add_ids: list[int], add_vectors: np.ndarray, generation: int
    ) -> None:
        with self._lock:
            if generation != self.generation + 1:  # others committed too: count afresh
                self._sync(generation)
                return
            self._count += len(add_ids) - len(remove)
            self._watermark = max([self._watermark, *add_ids])
            self.generation = generation

    def wrong_kind(self) -> bool:
        return False

    def save(self) -> None:
        """Nothing to save: the vectors committed with their chunks."""

    def check_embedder(self, engine: Engine) -> None:
        check_embedder(engine, self.embedder)

    def open(self, engine: Engine) -> str:
        """Make the table if needed, fill in the vectors it lacks and build the index."""
        self.check_embedder(engine)
        made = self._ensure_table(engine)
        with engine.connect() as conn:
            lacking = schema.missing(conn)
            indexed = schema.index_valid(conn) is True
        copied = 0
        if lacking or not indexed:
            with schema.setup_lock(engine) as conn:
                copied = self._copy(engine, only_missing=True)
                if copied:
                    schema.analyze(conn)
                schema.build_index(conn)
        with self._lock:
            self._sync(current_generation(engine))
        done = ["made the table"] if made else []
        done += [f"copied {copied} vectors from the stored embeddings"] if copied else []
        return ", ".join(done) or "current"

    def rebuild(self, engine: Engine) -> None:
        """Copy every stored embedding into the table again, rewriting only those that
        differ (a repair: after a re-encode, or writes by a process set to FAISS). Searches
        go on meanwhile; each batch commits on its own."""
        self._ensure_table(engine)
        with schema.setup_lock(engine) as conn:
            checked = self._copy(engine, only_missing=False)
            schema.build_index(conn)
        with self._lock:
            self._sync(current_generation(engine))
        log.info("pgvector: %d vectors checked against the stored embeddings", checked)

    def refresh_if_stale(self, engine: Engine) -> None:
        generation = current_generation(engine)
        if generation != self.generation:
            with self._lock:
                if generation != self.generation:
                    self._sync(generation)

    # --- internals ----------------------------------------------------------------------
    def _ensure_table(self, engine: Engine) -> bool:
        with write_session(engine) as session:
            made = schema.ensure_table(session.connection(), self.dimension)
        self._table_ready = True
        return made

    def _sync(self, generation: int) -> None:
        """Count the vectors, after filling in any a writer set to FAISS left out (chunk ids
        only grow, and chunks are written under the write lock, so new ones are above the
        watermark). The caller holds self._lock."""
        with self.engine.connect() as conn:
            top = int(conn.execute(text("SELECT coalesce(max(id), 0) FROM chunk")).scalar_one())
            lacking = schema.missing(conn, after=self._watermark)
        if lacking:
            log.warning("pgvector: %d chunks were written without their vectors", lacking)
            self._copy(self.engine, only_missing=True, after=self._watermark)
        with self.engine.connect() as conn:
            self._count = int(
                conn.execute(text(f"SELECT count(*) FROM {schema.TABLE}")).scalar_one()
            )
        self._watermark = top
        self.generation = generation

    def _copy(self, engine: Engine, *, only_missing: bool, after: int = 0) -> int:
        """Copy stored embeddings into the table, a batch per transaction; returns how many."""
        lacking = f"AND NOT EXISTS (SELECT 1 FROM {schema.TABLE} v WHERE v.chunk_id = c.id) "
        query = text(
            "SELECT c.id, c.embedding FROM chunk c WHERE c.id > :after "
            f"{lacking if only_missing else ''}ORDER BY c.id LIMIT :n"
        )
        total: int | str = "all"
        if only_missing:
            with engine.connect() as conn:
                total = schema.missing(conn, after=after)
        done = 0
        while True:
            with write_session(engine) as session:
                conn = session.connection()
                rows = conn.execute(query, {"after": after, "n": BATCH}).all()
                if not rows:
                    break
                ids = [int(r[0]) for r in rows]
                schema.write_vectors(conn, ids, self._decode([r[1] for r in rows]))
            after, done = ids[-1], done + len(ids)
            if done % (BATCH * 25) == 0:  # every 50,000
                log.info("pgvector: %d of %s vectors copied", done, total)
        if done:
            log.info("pgvector: %d of %s vectors copied", done, total)
        return done

    def _decode(self, blobs: list[bytes]) -> np.ndarray:
        vectors = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), -1)
        if vectors.shape[1] != self.dimension:
            raise IndexUnavailable(
                f"stored embeddings have dimension {vectors.shape[1]}, the embedder has "
                f"{self.dimension}; run `rodeoai index rebuild --reembed`",
                code="embedder_mismatch",
            )
        return vectors
