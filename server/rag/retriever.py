"""Hybrid retrieval: FAISS dense search and SQLite FTS5 bm25, fused by reciprocal rank."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from sqlalchemy import Engine, text

from server.errors import IndexUnavailable, InvalidInput
from server.rag.embedder import Embedder
from server.rag.vector_index import VectorIndex

_WORD = re.compile(r"[\w']+", re.UNICODE)
# Words that carry no topic: left in, they make bm25 favour chatty paragraphs.
_STOPWORDS = frozenset(
    (
        "a an and are as at be by can do does for from how i in is it me my of on or should "
        "the their there this to was what when where which who why will with you your"
    ).split()
)


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


def fts_query(query: str) -> str | None:
    """Quote each meaningful word so user text can never be read as FTS5 syntax."""
    words = [w for w in _WORD.findall(query.lower()) if w not in _STOPWORDS]
    if not words:
        return None
    return " OR ".join('"' + w.replace('"', "") + '"' for w in dict.fromkeys(words))


class Retriever:
    def __init__(
        self,
        engine: Engine,
        embedder: Embedder,
        index: VectorIndex,
        *,
        candidates: int,
        rrf_k: int,
    ) -> None:
        self.engine = engine
        self.embedder = embedder
        self.index = index
        self.candidates = candidates
        self.rrf_k = rrf_k

    def dense(self, query: str, k: int) -> list[int]:
        vector = self.embedder.encode([query])[0]
        return [chunk_id for chunk_id, _ in self.index.search(vector, k)]

    def lexical(self, query: str, k: int) -> list[int]:
        match = fts_query(query)
        if match is None:
            return []
        with self.engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT rowid FROM chunk_fts WHERE chunk_fts MATCH :q "
                    "ORDER BY bm25(chunk_fts, 2.0, 1.5, 1.0) LIMIT :k"
                ),
                {"q": match, "k": k},
            )
            return [int(r[0]) for r in rows]

    def search(self, query: str, k: int = 5) -> list[Hit]:
        query = query.strip()
        if not query:
            raise InvalidInput("the search query is empty", code="empty_query")
        if not 1 <= k <= 50:
            raise InvalidInput("k must be between 1 and 50", code="invalid_k")
        self.index.refresh_if_stale(self.engine)
        if self.index.count == 0:
            raise IndexUnavailable(
                "no knowledge is loaded yet; run `rodeoai ingest knowledge/` and try again",
                code="index_empty",
            )
        pool = max(self.candidates, k)
        # bm25 in SQLite and the embedder both release the GIL: run them side by side.
        lexical = _POOL.submit(self.lexical, query, pool)
        dense = self.dense(query, pool)
        fused: dict[int, float] = {}
        for ranking in (dense, lexical.result()):
            for rank, chunk_id in enumerate(ranking):
                fused[chunk_id] = fused.get(chunk_id, 0.0) + 1.0 / (self.rrf_k + rank + 1)
        best = sorted(fused.items(), key=lambda item: item[1], reverse=True)[:k]
        return self._hydrate(best)

    def _hydrate(self, ranked: list[tuple[int, float]]) -> list[Hit]:
        if not ranked:
            return []
        ids = [chunk_id for chunk_id, _ in ranked]
        marks = ",".join(str(int(i)) for i in ids)
        with self.engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT c.id, d.source, d.title, c.text, c.location, c.heading "
                    f"FROM chunk c JOIN document d ON d.id = c.document_id WHERE c.id IN ({marks})"
                )
            ).all()
        by_id = {int(r[0]): r for r in rows}
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
