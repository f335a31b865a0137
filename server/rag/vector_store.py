"""What the retriever and the ingestor ask of a vector store, wherever the vectors live: a
FAISS index in each worker's memory (vector_index.py, the default) or a pgvector table that
every replica shares (pgvector_store.py, RODEOAI_VECTOR_STORE=pgvector).

Both score by inner product on the L2-normalised embeddings of `chunk.embedding`, which stays
the source of truth: either store can always be refilled from it without re-encoding.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
from sqlalchemy import Connection, Engine, text

from server.db import chunk_count
from server.errors import IndexUnavailable


class VectorStore(Protocol):
    kind: str  # "faiss" or "pgvector", as /health and /ready report it
    embedder: str
    dimension: int
    generation: int  # the database generation the store reflects

    @property
    def count(self) -> int: ...

    def search(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        """The k nearest chunk ids with their inner products, best first."""
        ...

    def stage(self, connection: Connection, *, add_ids: list[int], add_vectors: np.ndarray) -> None:
        """Inside the ingestion's transaction, before it commits: a store in the database
        writes the new chunks' vectors here, so they commit (or roll back) with the chunks."""
        ...

    def follows(self, generation: int) -> bool:
        """Whether the change committed as `generation` can be applied in place (else the
        ingestor rebuilds)."""
        ...

    def apply(
        self, *, remove: list[int], add_ids: list[int], add_vectors: np.ndarray, generation: int
    ) -> None:
        """After the commit: mirror one committed change."""
        ...

    def wrong_kind(self) -> bool: ...

    def rebuild(self, engine: Engine) -> None:
        """Refill every vector from the embeddings stored in the database."""
        ...

    def save(self) -> None: ...

    def check_embedder(self, engine: Engine) -> None: ...

    def open(self, engine: Engine) -> str:
        """Ready the store for searches; returns what happened, for the start-up log."""
        ...

    def refresh_if_stale(self, engine: Engine) -> None: ...


def check_embedder(engine: Engine, embedder: str) -> None:
    """Stored vectors from another embedder are useless for this one: say how to fix it."""
    with engine.connect() as conn:
        row = conn.execute(text("SELECT value FROM meta WHERE key = 'embedder'")).first()
    stored = row[0] if row else None
    if stored and stored != embedder and chunk_count(engine):
        raise IndexUnavailable(
            f"the database holds embeddings from {stored!r} but the configured embedder is "
            f"{embedder!r}; run `rodeoai index rebuild --reembed` to re-encode the "
            "chunks, or set RODEOAI_EMBEDDER_PATH back",
            code="embedder_mismatch",
        )
