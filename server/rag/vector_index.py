"""FAISS inner-product index over chunk embeddings, saved crash-safely with a manifest.

SQLite is the source of truth: the index is a cache keyed by chunk id and stamped with the
database generation it reflects. Saves write a new file, fsync it, then atomically replace
the manifest that names it, so a kill at any point leaves the previous, readable pair.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from sqlalchemy import Connection, Engine, text

from server.db import chunk_count, current_generation
from server.files import atomic_write
from server.rag.vector_store import check_embedder

log = logging.getLogger(__name__)
_FAISS_THREADS = faiss.omp_get_max_threads()
SHARED_SCAN_MIN = 20_000  # below this many vectors an exact scan runs on one thread

MANIFEST = "manifest.json"
# Above ANN_MIN_CHUNKS an exact (flat) search costs more than the rest of a query together
# (16 ms at 100,000 chunks here, 147 ms at a million), so the index becomes an inverted file:
# about 4 * sqrt(n) k-means lists, of which a query scans PROBE_FRACTION. Measured recall@10
# against the exact search is in `make bench`.
ANN_MIN_CHUNKS = 50_000
PROBE_FRACTION = 1 / 64
MIN_PROBES = 16
TRAIN_PER_LIST = 48


@dataclass
class Manifest:
    embedder: str
    dimension: int
    count: int
    generation: int
    file: str


class IndexCorrupt(Exception):
    """The files on disk cannot be used; the caller rebuilds from SQLite."""


class _RWLock:
    """Many concurrent searches, or one writer."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writing = False

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writing:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            while self._writing or self._readers:
                self._cond.wait()
            self._writing = True
        try:
            yield
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()


class VectorIndex:
    """The default vector store (server/rag/vector_store.py): a copy in each process."""

    kind = "faiss"

    def __init__(
        self,
        directory: Path,
        *,
        embedder: str,
        dimension: int,
        ann_min_chunks: int = ANN_MIN_CHUNKS,
    ) -> None:
        self.directory = directory
        self.embedder = embedder
        self.dimension = dimension
        self.ann_min_chunks = ann_min_chunks
        self.generation = -1
        self._index = self._empty()
        self._lock = _RWLock()

    def _empty(self) -> Any:
        return self._build(np.zeros((0, self.dimension), np.float32), np.zeros(0, np.int64))

    def _build(self, vectors: np.ndarray, ids: np.ndarray) -> Any:
        """Exact search for a small collection; an inverted file trained on this one for a
        large collection."""
        index: Any
        if len(ids) < self.ann_min_chunks:
            index = faiss.IndexIDMap2(faiss.IndexFlatIP(self.dimension))
        else:
            lists = int(4 * np.sqrt(len(ids)))
            index = faiss.index_factory(
                self.dimension, f"IVF{lists},Flat", faiss.METRIC_INNER_PRODUCT
            )
            rng = np.random.default_rng(0)
            sample = rng.choice(len(ids), min(len(ids), lists * TRAIN_PER_LIST), replace=False)
            index.train(vectors[np.sort(sample)])
            index.nprobe = max(MIN_PROBES, int(lists * PROBE_FRACTION))
        if len(ids):
            index.add_with_ids(vectors, ids)
        return index

    @property
    def approximate(self) -> bool:
        return isinstance(self._index, faiss.IndexIVF)

    def wrong_kind(self) -> bool:
        """True when the collection has grown past the ANN threshold or shrunk well below
        it since the index was built (half the threshold, so it does not flip back and
        forth); the owner rebuilds."""
        if self.approximate:
            return self.count < self.ann_min_chunks // 2
        return self.count >= self.ann_min_chunks

    @property
    def count(self) -> int:
        return int(self._index.ntotal)

    # --- queries ------------------------------------------------------------------------
    def search(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        with self._lock.read():
            total = self._index.ntotal
            if total == 0:
                return []
            # FAISS's OpenMP threads, woken right after torch's have encoded the query, cost
            # more than a small search: 4-5 ms on 2 cores, for a 0.04 ms search. One thread
            # unless the search is large enough to share (an exact scan of many vectors).
            faiss.omp_set_num_threads(
                1 if self.approximate or total <= SHARED_SCAN_MIN else _FAISS_THREADS
            )
            scores, ids = self._index.search(vector.reshape(1, -1).astype(np.float32), k)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]

    # --- changes ------------------------------------------------------------------------
    def stage(self, connection: Connection, *, add_ids: list[int], add_vectors: np.ndarray) -> None:
        """Nothing to write in the transaction: the index mirrors the commit (apply)."""

    def follows(self, generation: int) -> bool:
        """No other process committed since this index was last brought up to date."""
        return self.generation == generation - 1

    def apply(
        self, *, remove: list[int], add_ids: list[int], add_vectors: np.ndarray, generation: int
    ) -> None:
        """Mirror one committed database change."""
        with self._lock.write():
            if remove:
                self._index.remove_ids(np.asarray(remove, dtype=np.int64))
            if add_ids:
                self._index.add_with_ids(add_vectors, np.asarray(add_ids, dtype=np.int64))
            self.generation = generation

    def rebuild(self, engine: Engine) -> None:
        """Reload every stored embedding from SQLite; no re-encoding is needed."""
        generation = current_generation(engine)
        ids: list[np.ndarray] = []
        vectors: list[np.ndarray] = []
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT id, embedding FROM chunk ORDER BY id"))
            batch_ids: list[int] = []
            batch_vecs: list[bytes] = []
            for chunk_id, blob in rows:
                batch_ids.append(chunk_id)
                batch_vecs.append(blob)
                if len(batch_ids) >= 10_000:
                    ids.append(np.asarray(batch_ids, dtype=np.int64))
                    vectors.append(self._decode(batch_vecs))
                    batch_ids, batch_vecs = [], []
            ids.append(np.asarray(batch_ids, dtype=np.int64))
            vectors.append(self._decode(batch_vecs))
        index = self._build(np.concatenate(vectors), np.concatenate(ids))
        with self._lock.write():
            self._index = index
            self.generation = generation
        self.save()

    def _decode(self, blobs: list[bytes]) -> np.ndarray:
        if not blobs:
            return np.zeros((0, self.dimension), np.float32)
        vectors = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), -1)
        if vectors.shape[1] != self.dimension:
            raise IndexCorrupt(
                f"stored embeddings have dimension {vectors.shape[1]}, embedder has "
                f"{self.dimension}; run `rodeoai index rebuild --reembed`"
            )
        return vectors

    # --- persistence --------------------------------------------------------------------
    def save(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        with self._lock.read():
            name = f"chunks-{self.generation}.faiss"
            atomic_write(self.directory / name, lambda tmp: faiss.write_index(self._index, tmp))
            manifest = Manifest(self.embedder, self.dimension, self.count, self.generation, name)
        atomic_write(
            self.directory / MANIFEST,
            lambda tmp: Path(tmp).write_text(json.dumps(asdict(manifest), indent=2)),
        )
        for stale in self.directory.glob("chunks-*.faiss"):
            if stale.name != name:
                stale.unlink(missing_ok=True)

    def read_manifest(self) -> Manifest:
        try:
            raw = json.loads((self.directory / MANIFEST).read_text())
            return Manifest(**raw)
        except FileNotFoundError as exc:
            raise IndexCorrupt("no index manifest") from exc
        except (ValueError, TypeError) as exc:
            raise IndexCorrupt(f"unreadable manifest: {exc}") from exc

    def load(self) -> Manifest:
        manifest = self.read_manifest()
        if manifest.embedder != self.embedder or manifest.dimension != self.dimension:
            raise IndexCorrupt(
                f"index was built with {manifest.embedder} ({manifest.dimension}-d), "
                f"settings use {self.embedder} ({self.dimension}-d)"
            )
        try:
            index = faiss.read_index(str(self.directory / manifest.file))
        except RuntimeError as exc:
            raise IndexCorrupt(f"unreadable index file {manifest.file}") from exc
        if index.ntotal != manifest.count or index.d != self.dimension:
            raise IndexCorrupt("index file does not match its manifest")
        with self._lock.write():
            self._index = index
            self.generation = manifest.generation
        return manifest

    def check_embedder(self, engine: Engine) -> None:
        check_embedder(engine, self.embedder)

    def open(self, engine: Engine) -> str:
        """Load from disk, or rebuild when the files are missing, corrupt or stale.

        Returns what happened, for the start-up log line."""
        self.check_embedder(engine)
        generation = current_generation(engine)
        try:
            manifest = self.load()
        except IndexCorrupt as exc:
            level = logging.WARNING if chunk_count(engine) else logging.INFO
            log.log(level, "rebuilding vector index from the database: %s", exc)
            self.rebuild(engine)
            return f"rebuilt ({exc})"
        if manifest.generation != generation or manifest.count != chunk_count(engine):
            reason = f"index generation {manifest.generation} != database {generation}"
            log.warning("rebuilding vector index from the database: %s", reason)
            self.rebuild(engine)
            return f"rebuilt ({reason})"
        if self.wrong_kind():  # the threshold setting changed since it was saved
            kind = "an approximate" if self.approximate else "an exact"
            reason = f"{kind} index for {self.count} chunks, threshold {self.ann_min_chunks}"
            log.warning("rebuilding vector index: %s", reason)
            self.rebuild(engine)
            return f"rebuilt ({reason})"
        return "loaded"

    def refresh_if_stale(self, engine: Engine) -> None:
        """Pick up changes another process (the CLI) committed since we last looked."""
        if current_generation(engine) != self.generation:
            self.open(engine)
