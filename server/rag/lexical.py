"""Lexical search behind one interface: FTS5 bm25 on SQLite, a weighted `tsvector` with a
GIN index on PostgreSQL. Both indexes are filled by triggers (see migration 0001), so they
change in the same transaction as the chunks and can never disagree with them.

User text is never read as query syntax: each meaningful word is quoted (FTS5) or passed
as a bound parameter (PostgreSQL)."""

from __future__ import annotations

import re
from typing import Protocol

from sqlalchemy import Engine, text

from server.db import is_sqlite

_WORD = re.compile(r"[\w']+", re.UNICODE)
# Words that carry no topic: left in, they make bm25 favour chatty paragraphs.
STOPWORDS = frozenset(
    (
        "a an and are as at be by can do does for from how i in is it me my of on or should "
        "the their there this to was what when where which who why will with you your"
    ).split()
)


def query_words(query: str) -> list[str]:
    """The words worth matching, in order, each once."""
    words = [w for w in _WORD.findall(query.lower()) if w not in STOPWORDS]
    return list(dict.fromkeys(w.replace('"', "") for w in words if w.replace('"', "")))


def fts_query(query: str) -> str | None:
    """An FTS5 MATCH expression: any of the quoted words."""
    words = query_words(query)
    return " OR ".join(f'"{w}"' for w in words) if words else None


class LexicalSearch(Protocol):
    def search(self, query: str, k: int) -> list[int]:
        """Ids of the k best chunks for the query, best first."""
        ...


class Fts5Search:
    """bm25 over (title, heading, text), the title weighted most."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def search(self, query: str, k: int) -> list[int]:
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


class TsvectorSearch:
    """ts_rank over chunk.tsv: title (A), heading (B) and text (C) in bm25's proportions,
    normalised by document length as bm25 is."""

    WEIGHTS = "{0.05,0.5,0.75,1.0}"  # D, C, B, A: 1 to 1.5 to 2, scaled into [0, 1]

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def search(self, query: str, k: int) -> list[int]:
        words = query_words(query)
        if not words:
            return []
        any_word = " || ".join(f"plainto_tsquery('english', :w{i})" for i in range(len(words)))
        params: dict[str, object] = {f"w{i}": w for i, w in enumerate(words)}
        with self.engine.connect() as conn:
            rows = conn.execute(
                text(
                    f"SELECT id FROM chunk, (SELECT {any_word} AS query) AS q WHERE tsv @@ q.query "
                    "ORDER BY ts_rank(CAST(:weights AS float4[]), tsv, q.query, 1) DESC, id "
                    "LIMIT :k"
                ),
                {**params, "weights": self.WEIGHTS, "k": k},
            )
            return [int(r[0]) for r in rows]


def lexical_search(engine: Engine) -> LexicalSearch:
    return Fts5Search(engine) if is_sqlite(engine) else TsvectorSearch(engine)
