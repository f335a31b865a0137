"""Hybrid retrieval: dense search (FAISS or pgvector) and lexical search (FTS5 bm25 or a PostgreSQL
tsvector), fused by reciprocal rank."""

from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, text

from server.db import current_generation
from server.errors import IndexUnavailable, InvalidInput, NotFound
from server.rag.bm25 import Bm25Cache
from server.rag.embedder import Embedder
from server.rag.lexical import lexical_search
from server.rag.vector_store import VectorStore

PASSAGE_CACHE = 4096  # chunks' rows kept between searches (a few MB of text)
_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="lexical")


@dataclass
class Hit:
    chunk_id: int
    score: float
    source: str
    title: str
    text: str
    location: str | None
    heading: str | None

    def as_dict(self) -> dict[str, object]:
        return {
            "source": self.source,
            "title": self.title,
            "chunk_id": self.chunk_id,
            "score": round(self.score, 6),
            "text": self.text,
            "location": self.location,
        }


class Retriever:
    def __init__(
        self,
        engine: Engine,
        embedder: Embedder,
        index: VectorStore,
        *,
        candidates: int,
        rrf_k: int,
        bm25: Bm25Cache | None = None,
    ) -> None:
        self.engine = engine
        self.embedder = embedder
        self.index = index
        self.candidates = candidates
        self.rrf_k = rrf_k
        self._lexical = lexical_search(engine)
        self.bm25 = bm25
        self._rows: OrderedDict[int, Any] = OrderedDict()  # chunk id -> its row, see _hydrate
        self._rows_generation: int | None = None
        self._rows_lock = threading.Lock()

    def _fresh_lexical(self, query: str, k: int, wanted: bool) -> tuple[int, list[int] | None]:
        """Bring the index up to the database's generation, then the lexical ranking at it
        (when `wanted`)."""
        self.index.refresh_if_stale(self.engine)
        if self.index.count == 0:
            raise IndexUnavailable(
                "no knowledge is loaded yet; run `rodeoai ingest knowledge/` and try again",
                code="index_empty",
            )
        generation = self.index.generation
        return generation, self.lexical(query, k, generation) if wanted else None

    def lexical(self, query: str, k: int, generation: int | None = None) -> list[int]:
        """The in-memory BM25 when it reflects `generation` (the database's, by default),
        else the database's own index."""
        if self.bm25 is not None:
            if generation is None:
                generation = current_generation(self.engine)
            snapshot = self.bm25.current(generation)
            if snapshot is not None:
                return snapshot.search(query, k)
        return self._lexical.search(query, k)

    def search(self, query: str, k: int = 5, mode: str = "hybrid") -> list[Hit]:
        """The k best chunks. `mode` hybrid fuses the dense and lexical rankings; dense or
        lexical uses one alone (an experiment's way to measure what each adds)."""
        query = query.strip()
        if not query:
            raise InvalidInput("the search query is empty", code="empty_query")
        if not 1 <= k <= 50:
            raise InvalidInput("k must be between 1 and 50", code="invalid_k")
        if mode not in {"hybrid", "dense", "lexical"}:
            raise InvalidInput(f"unknown retrieval mode {mode!r}", code="invalid_mode")
        pool = max(self.candidates, k)
        # The query's embedding runs beside the generation check and the lexical query: each
        # spends most of its time outside the GIL, and the embedding is the longest.
        checked = _POOL.submit(self._fresh_lexical, query, pool, mode != "dense")
        # Cached: fact selection reuses the question's vector.
        vector = self.embedder.encode_cached([query])[0] if mode != "lexical" else None
        generation, lexical = checked.result()
        rankings = [] if vector is None else [[i for i, _ in self.index.search(vector, pool)]]
        if lexical is not None:
            rankings.append(lexical)
        fused: dict[int, float] = {}
        for ranking in rankings:
            for rank, chunk_id in enumerate(ranking):
                fused[chunk_id] = fused.get(chunk_id, 0.0) + 1.0 / (self.rrf_k + rank + 1)
        best = sorted(fused.items(), key=lambda item: item[1], reverse=True)[:k]
        return self._hydrate(best, generation)

    def passage(self, chunk_id: int) -> Hit:
        """One chunk with its document's title and source, for a citation a reader opens."""
        found = self._hydrate([(chunk_id, 1.0)])
        if not found:
            raise NotFound("no such passage; the document may have been removed")
        return found[0]

    def document_passages(self, source: str) -> list[Hit]:
        """Every chunk of one document in order: the document as the knowledge base holds it
        (cleaned at ingestion, hidden text gone), for a reader that wants it whole."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT c.id, d.source, d.title, c.text, c.location, c.heading "
                    "FROM chunk c JOIN document d ON d.id = c.document_id "
                    "WHERE d.source = :source ORDER BY c.ordinal"
                ),
                {"source": source},
            ).all()
        if not rows:
            raise NotFound(f"no document {source!r}; list_sources names them")
        return [Hit(int(r[0]), 1.0, r[1], r[2], r[3], location=r[4], heading=r[5]) for r in rows]

    def _hydrate(self, ranked: list[tuple[int, float]], generation: int | None = None) -> list[Hit]:
        """The ranked chunks with their documents. Searches at a known database generation
        keep the rows in a small LRU cache, emptied when the generation moves on: a popular
        passage is read from the database once per change, not once per question."""
        if not ranked:
            return []
        with self._rows_lock:
            if generation is not None and generation != self._rows_generation:
                self._rows.clear()  # the chunks changed: nothing cached holds
                self._rows_generation = generation
            cached = self._rows if generation is not None else {}  # else: read afresh
            by_id = {i: row for i, _ in ranked if (row := cached.get(i)) is not None}
        missing = [i for i, _ in ranked if i not in by_id]
        if missing:
            marks = ",".join(str(int(i)) for i in missing)
            with self.engine.connect() as conn:
                rows = conn.execute(
                    text(
                        "SELECT c.id, d.source, d.title, c.text, c.location, c.heading FROM "
                        f"chunk c JOIN document d ON d.id = c.document_id WHERE c.id IN ({marks})"
                    )
                ).all()
            by_id.update((int(row[0]), row) for row in rows)
        with self._rows_lock:
            if generation is not None and generation == self._rows_generation:
                for i, row in by_id.items():
                    self._rows[i] = row
                    self._rows.move_to_end(i)
                while len(self._rows) > PASSAGE_CACHE:
                    self._rows.popitem(last=False)
        return [
            Hit(
                chunk_id=i,
                score=score,
                source=by_id[i][1],
                title=by_id[i][2],
                text=by_id[i][3],
                location=by_id[i][4],
                heading=by_id[i][5],
            )
            for i, score in ranked
            if i in by_id  # a chunk deleted between search and fetch is simply dropped
        ]
