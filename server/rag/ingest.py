"""Ingestion: files -> sections -> chunks -> embeddings -> one SQLite transaction per file.

Each file commits on its own, so a crash loses at most the file in flight; the FAISS
index mirrors each commit and is saved at the end (or rebuilt at start-up after a crash).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import Engine, func
from sqlmodel import Session, col, select

from server.db import (
    Chunk,
    Document,
    bump_generation,
    ingest_lock,
    read_session,
    set_meta,
    utcnow,
    write_session,
)
from server.errors import IngestError, NotFound
from server.rag.chunking import ChunkDraft, chunk_sections
from server.rag.embedder import Embedder
from server.rag.loaders import SUPPORTED_SUFFIXES, LoadedFile, load_file
from server.rag.vector_store import VectorStore

log = logging.getLogger(__name__)

Progress = Callable[[Path, int, int], None]  # file, done, total: files, or chunks of one file
# Chunks encoded in one call (progress is told after each), and how many new chunks a group
# of files gathers before it is encoded: small files share calls, keeping batches full.
ENCODE_BATCH = 256
GROUP_CHUNKS = 512


@dataclass
class _Prepared:
    """One changed file, parsed and chunked, waiting for its vectors."""

    path: Path
    source: str
    digest: str
    loaded: LoadedFile
    drafts: list[ChunkDraft]
    reuse: dict[str, bytes]  # content hash -> the vector of an unchanged chunk
    dimension: int
    vectors: np.ndarray = field(init=False)
    todo: list[int] = field(init=False)  # the drafts to encode
    encoded: int = 0
    failure: str = ""

    def __post_init__(self) -> None:
        self.vectors = np.zeros((len(self.drafts), self.dimension), dtype=np.float32)
        self.todo = []
        for i, draft in enumerate(self.drafts):
            if draft.content_hash in self.reuse:
                self.vectors[i] = np.frombuffer(self.reuse[draft.content_hash], np.float32)
            else:
                self.todo.append(i)


@dataclass
class IngestSummary:
    added_documents: int = 0
    updated_documents: int = 0
    unchanged_documents: int = 0
    removed_documents: int = 0
    skipped_files: int = 0
    added_chunks: int = 0
    removed_chunks: int = 0
    errors: list[dict[str, str]] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"documents: {self.added_documents} added, {self.updated_documents} updated, "
            f"{self.unchanged_documents} unchanged, {self.removed_documents} removed, "
            f"{self.skipped_files} skipped; chunks: {self.added_chunks} added, "
            f"{self.removed_chunks} removed"
        )

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


# Told of each ingestion run's summary (the Prometheus ingestion counters listen); the
# ingestor never learns who listens.
IngestObserver = Callable[[IngestSummary], None]


def embedding_input(title: str, draft: ChunkDraft) -> str:
    """Title and heading ride along with the text so short sections stay findable."""
    return "\n".join(part for part in (title, draft.heading, draft.text) if part)


class Ingestor:
    def __init__(
        self,
        engine: Engine,
        embedder: Embedder,
        index: VectorStore,
        *,
        knowledge_dir: Path,
        chunk_tokens: int,
        chunk_overlap: int,
        max_file_bytes: int,
        uploads_dir: Path | None = None,
        observers: list[IngestObserver] | None = None,
    ) -> None:
        self.engine = engine
        self.embedder = embedder
        self.index = index
        self.knowledge_dir = knowledge_dir.resolve()
        self.uploads_dir = uploads_dir.resolve() if uploads_dir else None
        self.chunk_tokens = chunk_tokens
        self.chunk_overlap = chunk_overlap
        self.max_file_bytes = max_file_bytes
        self.observers = observers if observers is not None else []

    # --- naming -------------------------------------------------------------------------
    def source_name(self, path: Path) -> str:
        """Files under the knowledge folder are named `knowledge/...` wherever the app runs,
        uploaded files `uploads/...`; anything else by its absolute path."""
        resolved = path.resolve()
        if resolved.is_relative_to(self.knowledge_dir):
            rel = resolved.relative_to(self.knowledge_dir).as_posix()
            return f"{self.knowledge_dir.name}/{rel}"
        if self.uploads_dir and resolved.is_relative_to(self.uploads_dir):
            return f"uploads/{resolved.relative_to(self.uploads_dir).as_posix()}"
        return resolved.as_posix()

    def save_upload(self, filename: str, data: bytes) -> Path:
        """Keep an uploaded file under the uploads folder, by a safe version of its name;
        a file of the same name is replaced, so uploading it again updates the document."""
        if self.uploads_dir is None:
            raise IngestError("uploads are not configured", code="uploads_off")
        name = _safe_filename(filename)
        if Path(name).suffix.lower() not in SUPPORTED_SUFFIXES:
            kinds = ", ".join(sorted(SUPPORTED_SUFFIXES))
            raise IngestError(f"{name}: not a supported file type ({kinds})", code="unsupported")
        if len(data) > self.max_file_bytes:
            raise IngestError(
                f"{name} is larger than {self.max_file_bytes} bytes", code="file_too_large"
            )
        self.uploads_dir.mkdir(parents=True, exist_ok=True)
        target = self.uploads_dir / name
        partial = target.with_name(f".{name}.part")
        partial.write_bytes(data)
        partial.replace(target)  # never a half-written file under the real name
        return target

    def documents(self) -> list[dict[str, object]]:
        """Every ingested document, by source."""
        with read_session(self.engine) as session:
            docs = session.exec(select(Document).order_by(Document.source)).all()
        return [
            {
                "source": d.source,
                "title": d.title,
                "kind": d.kind,
                "chunks": d.chunk_count,
                "updated_at": d.updated_at.isoformat(),
            }
            for d in docs
        ]

    @staticmethod
    def discover(paths: Iterable[Path]) -> tuple[list[Path], list[Path]]:
        """Files to ingest, and the folders given (whose vanished files get pruned). A link
        in a folder that points out of it is kept here, so `ingest` reports it as skipped."""
        files: list[Path] = []
        folders: list[Path] = []
        for path in paths:
            if path.is_dir():
                folders.append(path)
                files.extend(
                    p
                    for p in sorted(path.rglob("*"))
                    if (p.is_file() or p.is_symlink())
                    and p.suffix.lower() in SUPPORTED_SUFFIXES
                    and not any(part.startswith(".") for part in p.relative_to(path).parts)
                )
            else:
                files.append(path)  # missing or unsupported files are reported, not dropped
        return files, folders

    @staticmethod
    def _outside(path: Path, folders: list[Path]) -> bool:
        """A file found in a folder whose real location is not in that folder (a link out)."""
        found_in = [f for f in folders if path.is_relative_to(f)]
        return bool(found_in) and not any(
            path.resolve().is_relative_to(f.resolve()) for f in found_in
        )

    # --- ingestion ----------------------------------------------------------------------
    def ingest(
        self,
        paths: Iterable[Path],
        *,
        prune: bool = True,
        progress: Progress | None = None,
        chunk_progress: Progress | None = None,
    ) -> IngestSummary:
        """Add, update and (with `prune`) remove documents. One ingestion runs at a time,
        across workers and replicas: another waits for the lock, then finds unchanged files
        unchanged."""
        with ingest_lock(self.engine):
            return self.ingest_unlocked(
                paths, prune=prune, progress=progress, chunk_progress=chunk_progress
            )

    def ingest_unlocked(
        self,
        paths: Iterable[Path],
        *,
        prune: bool = True,
        progress: Progress | None = None,
        chunk_progress: Progress | None = None,
    ) -> IngestSummary:
        """`ingest` for a caller that already holds `ingest_lock`."""
        files, folders = self.discover(paths)
        summary = IngestSummary()
        seen: set[str] = set()
        group: list[_Prepared] = []
        finished = 0

        def finish(path: Path) -> None:  # stored, unchanged or skipped: in any order
            nonlocal finished
            finished += 1
            if progress:
                progress(path, finished, len(files))

        for number, path in enumerate(files, start=1):
            try:
                if self._outside(path, folders):
                    raise IngestError(
                        "a link to a file outside the folder; ingest that file by its own path",
                        code="outside_folder",
                    )
                source = self.source_name(path)
                seen.add(source)
                prepared = self._prepare(path, source)
                if prepared is None:
                    summary.unchanged_documents += 1
                else:
                    group.append(prepared)
            except IngestError as exc:
                self._skip(summary, path, exc.code, exc.message)
            except Exception as exc:  # one bad file never stops the batch
                log.exception("failed on %s", path)
                self._skip(summary, path, "internal_error", f"{type(exc).__name__}: {exc}")
            if not group or group[-1].path != path:
                finish(path)
            if group and (sum(len(p.todo) for p in group) >= GROUP_CHUNKS or number == len(files)):
                for stored in self._store(group, summary, chunk_progress):
                    finish(stored)
                group = []
        if prune:
            for folder in folders:
                prefix = self.source_name(folder).rstrip("/") + "/"
                for source in self._sources_under(prefix) - seen:
                    removed = self._remove(source, save=False)
                    summary.removed_documents += 1
                    summary.removed_chunks += removed
        if summary.added_documents or summary.updated_documents or summary.removed_documents:
            self.index.save()
        for observer in self.observers:
            try:
                observer(summary)
            except Exception:  # a listener's fault never fails an ingestion
                log.exception("an ingestion observer failed")
        return summary

    @staticmethod
    def _skip(summary: IngestSummary, path: Path, code: str, message: str) -> None:
        summary.skipped_files += 1
        summary.errors.append({"path": str(path), "code": code, "message": message})
        log.warning("skipped %s: %s", path, message)

    def _read(self, path: Path) -> bytes:
        """The file's bytes, after the checks that need none of them: type, kind, size."""
        if path.suffix.lower() not in SUPPORTED_SUFFIXES:
            raise IngestError(
                f"unsupported file type {path.suffix.lower() or '(none)'}", code="unsupported_type"
            )
        limit = self.max_file_bytes
        try:
            info = path.stat()
            if not stat.S_ISREG(info.st_mode):
                raise IngestError("not a regular file", code="not_a_file")
            if info.st_size > limit:
                raise IngestError(
                    f"file is {info.st_size:,} bytes; the limit is {limit:,} "
                    "(RODEOAI_MAX_FILE_BYTES)",
                    code="file_too_large",
                )
            with path.open("rb") as handle:
                raw = handle.read(limit + 1)  # bounded even if the file grows meanwhile
        except FileNotFoundError as exc:
            raise IngestError("file not found", code="not_found") from exc
        except OSError as exc:
            raise IngestError(f"cannot read file: {exc.strerror}", code="unreadable_file") from exc
        if len(raw) > limit:
            raise IngestError(f"file grew past {limit:,} bytes while read", code="file_too_large")
        return raw

    def _prepare(self, path: Path, source: str) -> _Prepared | None:
        """Read, parse and chunk one file; None when it is unchanged since last time."""
        raw = self._read(path)
        digest = hashlib.sha256(raw).hexdigest()
        with read_session(self.engine) as session:
            existing = session.exec(select(Document).where(Document.source == source)).first()
            if existing and existing.content_hash == digest:
                return None
            reuse = self._old_vectors(session, existing.id) if existing else {}
        loaded = load_file(path, raw)
        drafts = chunk_sections(
            loaded.sections,
            count_tokens=self.embedder.count_tokens,
            max_tokens=self.chunk_tokens,
            overlap=self.chunk_overlap,
        )
        return _Prepared(path, source, digest, loaded, drafts, reuse, self.embedder.dimension)

    def _store(
        self, group: list[_Prepared], summary: IngestSummary, chunk_progress: Progress | None
    ) -> Iterator[Path]:
        """Encode the group's new chunks together, then write each file in its own
        transaction. One call for many small files keeps the encoder's batches full and
        sorted by length (per-file calls cost 22% more on the starter knowledge)."""
        try:
            self._embed(group, chunk_progress)
        except Exception:  # find the file at fault: encode them one by one
            log.exception("encoding a group of %d files failed; retrying each", len(group))
            for prepared in group:
                try:
                    self._embed([prepared], chunk_progress)
                except Exception as exc:
                    prepared.failure = f"{type(exc).__name__}: {exc}"
        for prepared in group:
            try:
                if prepared.failure:
                    raise RuntimeError(prepared.failure)
                removed, added_ids = self._replace(
                    prepared.source,
                    prepared.digest,
                    prepared.loaded,
                    prepared.drafts,
                    prepared.vectors,
                )
            except Exception as exc:  # one bad file never stops the batch
                log.exception("failed on %s", prepared.path)
                message = f"{type(exc).__name__}: {exc}"
                self._skip(summary, prepared.path, "internal_error", message)
            else:
                if removed is None:
                    summary.added_documents += 1
                else:
                    summary.updated_documents += 1
                    summary.removed_chunks += len(removed)
                summary.added_chunks += len(added_ids)
            yield prepared.path

    def _embed(self, group: list[_Prepared], progress: Progress | None) -> None:
        """Fill each file's vectors: unchanged chunks keep theirs, the rest are encoded in
        slices of the whole group, with each file's progress told after every slice."""
        todo = [(p, i, embedding_input(p.loaded.title, p.drafts[i])) for p in group for i in p.todo]
        # Longest first across the whole group, as the encoder sorts within one call: each
        # slice then pads its batches to similar lengths (slices cut from file order padded
        # short chunks to long ones, 4% slower than one call on the starter knowledge).
        todo.sort(key=lambda item: len(item[2]), reverse=True)
        for start in range(0, len(todo), ENCODE_BATCH):
            batch = todo[start : start + ENCODE_BATCH]
            vectors = self.embedder.encode([text for _, _, text in batch])
            touched: dict[int, _Prepared] = {}
            for (prepared, i, _), vector in zip(batch, vectors, strict=True):
                prepared.vectors[i] = vector
                prepared.encoded += 1
                touched[id(prepared)] = prepared
            if progress:
                for prepared in touched.values():
                    progress(prepared.path, prepared.encoded, len(prepared.todo))

    def _old_vectors(self, session: Session, document_id: int | None) -> dict[str, bytes]:
        rows = session.exec(select(Chunk).where(Chunk.document_id == document_id)).all()
        return {row.content_hash: row.embedding for row in rows}

    def _replace(
        self,
        source: str,
        digest: str,
        loaded: LoadedFile,
        drafts: list[ChunkDraft],
        vectors: np.ndarray,
    ) -> tuple[list[int] | None, list[int]]:
        meta = loaded.meta
        events = meta.get("events") or []
        with write_session(self.engine) as session:
            doc = session.exec(select(Document).where(Document.source == source)).first()
            removed: list[int] | None = None
            if doc is None:
                doc = Document(
                    source=source, title=loaded.title, kind=loaded.kind, content_hash=digest
                )
            else:
                old = session.exec(select(Chunk).where(Chunk.document_id == doc.id)).all()
                removed = [c.id for c in old if c.id is not None]
                for chunk in old:
                    session.delete(chunk)
                session.flush()
            doc.title, doc.kind, doc.content_hash = loaded.title, loaded.kind, digest
            doc.category = _opt_str(meta.get("category"))
            doc.events_json = json.dumps(
                [str(e) for e in events] if isinstance(events, list) else [str(events)]
            )
            doc.skill_level = _opt_str(meta.get("skill_level"))
            doc.basis = _opt_str(meta.get("source") or meta.get("basis"))
            doc.chunk_count = len(drafts)
            doc.updated_at = utcnow()
            session.add(doc)
            session.flush()
            assert doc.id is not None
            chunks = [
                Chunk(
                    document_id=doc.id,
                    ordinal=i,
                    text=d.text,
                    heading=d.heading,
                    location=d.location,
                    token_count=d.token_count,
                    content_hash=d.content_hash,
                    embedding=vectors[i].tobytes(),
                )
                for i, d in enumerate(drafts)
            ]
            session.add_all(chunks)
            session.flush()
            added_ids = [c.id for c in chunks if c.id is not None]
            # pgvector writes the vectors here, to commit or roll back with their chunks.
            self.index.stage(session.connection(), add_ids=added_ids, add_vectors=vectors)
            set_meta(session, "embedder", self.embedder.name)
            generation = bump_generation(session)
        self._mirror(removed or [], added_ids, vectors, generation)
        return removed, added_ids

    def _mirror(
        self, removed: list[int], added: list[int], vectors: np.ndarray, generation: int
    ) -> None:
        if not self.index.follows(generation):
            # Another process changed the database since we loaded: resync fully.
            self.index.rebuild(self.engine)
            return
        self.index.apply(remove=removed, add_ids=added, add_vectors=vectors, generation=generation)
        if self.index.wrong_kind():  # crossed the exact/approximate threshold: retrain
            self.index.rebuild(self.engine)

    def reembed(self, progress: Progress | None = None, *, batch: int = 256) -> int:
        """Re-encode every stored chunk with the configured embedder, then rebuild the index."""
        with ingest_lock(self.engine):
            return self._reembed(progress, batch=batch)

    def _reembed(self, progress: Progress | None, *, batch: int) -> int:
        with read_session(self.engine) as session:
            ids = list(session.exec(select(Chunk.id).order_by(col(Chunk.id))).all())
        done = 0
        for start in range(0, len(ids), batch):
            part = ids[start : start + batch]
            with write_session(self.engine) as session:
                rows = session.exec(
                    select(Chunk, Document.title).join(Document).where(col(Chunk.id).in_(part))
                ).all()
                drafts = [ChunkDraft(c.text, c.token_count, c.heading, c.location) for c, _ in rows]
                vectors = self.embedder.encode(
                    [embedding_input(title, d) for (_, title), d in zip(rows, drafts, strict=True)]
                )
                for (chunk, _), vector in zip(rows, vectors, strict=True):
                    chunk.embedding = vector.tobytes()
                    session.add(chunk)
                bump_generation(session)
            done += len(part)
            if progress:
                progress(Path(f"chunk {done}"), done, len(ids))
        with write_session(self.engine) as session:
            set_meta(session, "embedder", self.embedder.name)
        self.index.rebuild(self.engine)
        return done

    # --- removal ------------------------------------------------------------------------
    def remove(self, source: str, *, save: bool = True) -> int:
        """Delete a document and its chunks. Returns the number of chunks removed."""
        with ingest_lock(self.engine):
            return self._remove(source, save=save)

    def _remove(self, source: str, *, save: bool) -> int:
        with write_session(self.engine) as session:
            doc = session.exec(select(Document).where(Document.source == source)).first()
            if doc is None:
                raise NotFound(f"no document with source {source!r}; see `rodeoai sources`")
            ids = [
                c.id
                for c in session.exec(select(Chunk).where(Chunk.document_id == doc.id))
                if c.id is not None
            ]
            session.delete(doc)  # chunks and their FTS rows follow by cascade and trigger
            generation = bump_generation(session)
        self._mirror(ids, [], np.zeros((0, self.embedder.dimension), np.float32), generation)
        if save:
            self.index.save()
        return len(ids)

    def _sources_under(self, prefix: str) -> set[str]:
        # An exact, case-sensitive prefix: LIKE would read "_" and "%" as wildcards and,
        # in SQLite, ignore ASCII case, so pruning a_b/ would delete aXb/ and A_B/.
        with read_session(self.engine) as session:
            rows = session.exec(
                select(Document.source).where(
                    func.substr(Document.source, 1, len(prefix)) == prefix
                )
            ).all()
        return set(rows)


def _safe_filename(filename: str) -> str:
    """The last part of a client's file name, in letters, digits, dot, dash and underscore."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(filename.replace("\\", "/")).name).strip(".-")
    if not base:
        raise IngestError("the file has no usable name", code="bad_filename")
    return base[:120]


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)
