"""An in-memory BM25 index over the chunks: the fast path for lexical search.

The database's own lexical index (FTS5 or a tsvector, see lexical.py) is always right but
ranks every matching row on every query: 80-90 ms at 100,000 chunks here. This index holds
the same postings as compressed numpy arrays and scores a query in a few milliseconds.

It is a cache, like the FAISS index: built from the database, stamped with the database
generation it reflects, and never trusted when that generation has moved on. The scoring
copies FTS5's bm25 (k1 1.2, b 0.75, weighted term frequency over title, heading and text,
document length over all three), so either path ranks the same way.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import Stemmer
from sqlalchemy import Engine, text

from server.db import chunk_count, current_generation
from server.rag.lexical import STOPWORDS

log = logging.getLogger(__name__)

K1 = 1.2
B = 0.75
# Column weights, as the FTS5 query in lexical.py uses them.
TITLE_WEIGHT, HEADING_WEIGHT, TEXT_WEIGHT = 2.0, 1.5, 1.0
# unicode61 keeps letters and digits together; everything else, "_" too, separates.
# Up to this many chunks a stale index is rebuilt before the search that finds it stale.
SYNC_MAX_CHUNKS = 2_000
# Up to this many chunks the index is built at start-up, before the server says it is ready.
WARM_MAX_CHUNKS = 20_000
_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)
_STEMMER = Stemmer.Stemmer("porter")


@lru_cache(maxsize=200_000)
def _term(word: str) -> str:
    """A word as FTS5's 'porter unicode61 remove_diacritics 2' indexes it."""
    plain = "".join(c for c in unicodedata.normalize("NFKD", word) if not unicodedata.combining(c))
    return str(_STEMMER.stemWord(plain))


def tokens(value: str | None) -> list[str]:
    """Lower-cased word tokens, as FTS5's unicode61 tokenizer splits them."""
    return _TOKEN.findall(value.lower()) if value else []


def query_terms(query: str) -> list[str]:
    """The stemmed terms of a query's meaningful words, each once."""
    return list(dict.fromkeys(_term(w) for w in tokens(query) if w not in STOPWORDS))


@dataclass(frozen=True)
class Bm25Snapshot:
    """Postings in CSR form: the postings of term t are slots[indptr[t]:indptr[t + 1]], each
    with its length-normalised term-frequency factor in `factors` (idf is applied per query,
    from the posting count)."""

    generation: int
    vocabulary: dict[str, int]
    indptr: np.ndarray  # int64, len(vocabulary) + 1
    slots: np.ndarray  # int32
    factors: np.ndarray  # float32
    chunk_ids: np.ndarray  # int64, one per slot

    @property
    def count(self) -> int:
        return len(self.chunk_ids)

    @property
    def nbytes(self) -> int:
        return int(
            self.indptr.nbytes + self.slots.nbytes + self.factors.nbytes + self.chunk_ids.nbytes
        )

    def search(self, query: str, k: int) -> list[int]:
        """Ids of the k best chunks, best first; ties go to the lower id, as a stable order."""
        n = self.count
        scores = np.zeros(n, dtype=np.float32)
        matched = False
        for word in query_terms(query):
            term = self.vocabulary.get(word)
            if term is None:
                continue
            start, end = int(self.indptr[term]), int(self.indptr[term + 1])
            df = end - start
            # FTS5's idf, floored at a tiny positive value for words in most chunks.
            idf = max(math.log((n - df + 0.5) / (df + 0.5)), 1e-6)
            scores[self.slots[start:end]] += np.float32(idf) * self.factors[start:end]
            matched = True
        if not matched:
            return []
        found = np.flatnonzero(scores)
        if len(found) > k:
            found = found[np.argpartition(-scores[found], k - 1)[:k]]
        order = np.lexsort((self.chunk_ids[found], -scores[found]))
        return [int(i) for i in self.chunk_ids[found[order]]]


def build(rows: Iterable[tuple[int, str | None, str | None, str]], generation: int) -> Bm25Snapshot:
    """A snapshot from (chunk id, title, heading, text) rows."""
    vocabulary: dict[str, int] = {}
    chunk_ids: list[int] = []
    lengths: list[int] = []
    terms: list[int] = []
    slots: list[int] = []
    weights: list[float] = []
    for slot, (chunk_id, title, heading, body) in enumerate(rows):
        chunk_ids.append(chunk_id)
        columns = (tokens(title), tokens(heading), tokens(body))
        lengths.append(sum(len(c) for c in columns))
        weighted: dict[str, float] = defaultdict(float)
        for column, weight in zip(
            columns, (TITLE_WEIGHT, HEADING_WEIGHT, TEXT_WEIGHT), strict=True
        ):
            for word, count in Counter(column).items():
                if word not in STOPWORDS:
                    weighted[_term(word)] += weight * count
        for word, tf in weighted.items():
            terms.append(vocabulary.setdefault(word, len(vocabulary)))
            slots.append(slot)
            weights.append(tf)
    return _compress(vocabulary, chunk_ids, lengths, terms, slots, weights, generation)


def _compress(
    vocabulary: dict[str, int],
    chunk_ids: list[int],
    lengths: list[int],
    terms: list[int],
    slots: list[int],
    weights: list[float],
    generation: int,
) -> Bm25Snapshot:
    term_array = np.asarray(terms, dtype=np.int32)
    slot_array = np.asarray(slots, dtype=np.int32)
    tf = np.asarray(weights, dtype=np.float32)
    length = np.asarray(lengths, dtype=np.float32)
    average = float(length.mean()) if len(length) else 1.0
    # The part of bm25 that does not depend on the query, computed once here.
    norm = K1 * (1 - B + B * length[slot_array] / max(average, 1e-6))
    factors = (tf * (K1 + 1) / (tf + norm)).astype(np.float32)
    order = np.argsort(term_array, kind="stable")
    indptr = np.zeros(len(vocabulary) + 1, dtype=np.int64)
    np.cumsum(np.bincount(term_array, minlength=len(vocabulary)), out=indptr[1:])
    return Bm25Snapshot(
        generation=generation,
        vocabulary=vocabulary,
        indptr=indptr,
        slots=slot_array[order],
        factors=factors[order],
        chunk_ids=np.asarray(chunk_ids, dtype=np.int64),
    )


def load(engine: Engine) -> Bm25Snapshot:
    """Build from the database. The generation is read before the rows, so a change
    committed in between leaves the snapshot stamped older than its rows (rebuilt again at
    the next look), never newer (stale for good)."""
    generation = current_generation(engine)
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT c.id, d.title, c.heading, c.text FROM chunk c "
                "JOIN document d ON d.id = c.document_id ORDER BY c.id"
            )
        )
        return build(((int(r[0]), r[1], r[2], r[3]) for r in rows), generation)


class Bm25Cache:
    """The current snapshot, kept in step with the database generation.

    A small knowledge base (up to `sync_max_chunks`, well under a second's work) is rebuilt
    in the searching thread, so its results never depend on timing. A large one is rebuilt
    in a background thread: until that lands, `current` returns None and the caller uses the
    database's lexical index, which is always up to date."""

    def __init__(self, engine: Engine, *, sync_max_chunks: int = SYNC_MAX_CHUNKS) -> None:
        self.engine = engine
        self.sync_max_chunks = sync_max_chunks
        self._snapshot: Bm25Snapshot | None = None
        self._lock = threading.Lock()
        self._sync = threading.Lock()
        self._building = False

    def current(self, generation: int) -> Bm25Snapshot | None:
        snapshot = self._snapshot
        if snapshot is not None and snapshot.generation == generation:
            return snapshot
        if self._building:  # a background build is on its way: no count on every search
            return None
        size = snapshot.count if snapshot is not None else chunk_count(self.engine)
        if size <= self.sync_max_chunks:
            with self._sync:  # one thread rebuilds; the others wait and use its result
                snapshot = self._snapshot
                if snapshot is None or snapshot.generation < generation:
                    snapshot = self.warm()
            return snapshot if snapshot.generation == generation else None
        self.start_rebuild()
        return None

    def open(self) -> None:
        """At start-up: build now when that is quick (up to WARM_MAX_CHUNKS, about a
        second), else in the background, the database's index answering meanwhile."""
        if chunk_count(self.engine) <= WARM_MAX_CHUNKS:
            self.warm()
        else:
            self.start_rebuild()

    def warm(self) -> Bm25Snapshot:
        """Build now, in the caller's thread (start-up, tests, benchmarks)."""
        self._snapshot = load(self.engine)
        return self._snapshot

    def start_rebuild(self) -> None:
        """Rebuild in a background thread, unless one is already running."""
        with self._lock:
            if self._building:
                return
            self._building = True
        threading.Thread(target=self._rebuild, name="bm25-rebuild", daemon=True).start()

    def _rebuild(self) -> None:
        try:
            while True:
                started = time.perf_counter()
                snapshot = self.warm()
                log.info(
                    "lexical index rebuilt: %d chunks, %d terms, generation %d, %.2f s",
                    snapshot.count,
                    len(snapshot.vocabulary),
                    snapshot.generation,
                    time.perf_counter() - started,
                )
                if current_generation(self.engine) == snapshot.generation:
                    return
        except Exception:  # the database path keeps serving; the next search tries again
            log.exception("lexical index rebuild failed")
        finally:
            with self._lock:
                self._building = False
