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
from sqlalchemy import Engine, text

from server.db import current_generation
from server.errors import IndexUnavailable
from server.files import atomic_write

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"


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
    def __init__(self, directory: Path, *, embedder: str, dimension: int) -> None:
        self.directory = directory
        self.embedder = embedder
        self.dimension = dimension
        self.generation = -1
        self._index = self._empty()
        self._lock = _RWLock()

    def _empty(self) -> Any:
        return faiss.IndexIDMap2(faiss.IndexFlatIP(self.dimension))

    @property
    def count(self) -> int:
        return int(self._index.ntotal)

    # --- queries ------------------------------------------------------------------------
    def search(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        with self._lock.read():
            if self._index.ntotal == 0:
                return []
            scores, ids = self._index.search(vector.reshape(1, -1).astype(np.float32), k)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]

    # --- changes ------------------------------------------------------------------------
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
        index = self._empty()
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT id, embedding FROM chunk ORDER BY id"))
            batch_ids: list[int] = []
            batch_vecs: list[bytes] = []
            for chunk_id, blob in rows:
                batch_ids.append(chunk_id)
                batch_vecs.append(blob)
                if len(batch_ids) >= 10_000:
                    self._add_blobs(index, batch_ids, batch_vecs)
                    batch_ids, batch_vecs = [], []
            self._add_blobs(index, batch_ids, batch_vecs)
        with self._lock.write():
            self._index = index
            self.generation = generation
        self.save()

    def _add_blobs(self, index: Any, ids: list[int], blobs: list[bytes]) -> None:
        if not ids:
            return
        vectors = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(ids), -1)
        if vectors.shape[1] != self.dimension:
            raise IndexCorrupt(
                f"stored embeddings have dimension {vectors.shape[1]}, embedder has "
                f"{self.dimension}; run `rodeoai index rebuild --reembed`"
            )
        index.add_with_ids(vectors, np.asarray(ids, dtype=np.int64))

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
        """Stored vectors from another embedder are useless for this one: say how to fix it."""
        with engine.connect() as conn:
            row = conn.execute(text("SELECT value FROM meta WHERE key = 'embedder'")).first()
        stored = row[0] if row else None
        if stored and stored != self.embedder and _chunk_count(engine):
            raise IndexUnavailable(
                f"the database holds embeddings from {stored!r} but the configured embedder is "
                f"{self.embedder!r}; run `rodeoai index rebuild --reembed` to re-encode the "
                "chunks, or set RODEOAI_EMBEDDER_PATH back",
                code="embedder_mismatch",
            )

    def open(self, engine: Engine) -> str:
        """Load from disk, or rebuild when the files are missing, corrupt or stale.

        Returns what happened, for the start-up log line."""
        self.check_embedder(engine)
        generation = current_generation(engine)
        try:
            manifest = self.load()
        except IndexCorrupt as exc:
            level = logging.WARNING if _chunk_count(engine) else logging.INFO
            log.log(level, "rebuilding vector index from the database: %s", exc)
            self.rebuild(engine)
            return f"rebuilt ({exc})"
        if manifest.generation != generation or manifest.count != _chunk_count(engine):
            reason = f"index generation {manifest.generation} != database {generation}"
            log.warning("rebuilding vector index from the database: %s", reason)
            self.rebuild(engine)
            return f"rebuilt ({reason})"
        return "loaded"

    def refresh_if_stale(self, engine: Engine) -> None:
        """Pick up changes another process (the CLI) committed since we last looked."""
        if current_generation(engine) != self.generation:
            self.open(engine)


def _chunk_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM chunk")).scalar_one())
