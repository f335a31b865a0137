"""Ingestion encodes the new chunks of several files in one call (full batches, sorted by
length), then writes each file in its own transaction, as before."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlmodel import select

from server.components import Components
from server.db import Chunk, Document, read_session
from server.rag.chunking import ChunkDraft
from server.rag.ingest import embedding_input
from tests.conftest import MakeSettings

pytestmark = pytest.mark.one_pass  # engine-agnostic: the crash and engine tests cover both

TOPICS = ["heading", "heeling", "dallies", "barrels", "breakaway", "tie-down"]


def _write(folder: Path, count: int) -> None:
    folder.mkdir(parents=True)
    for n in range(count):
        topic = TOPICS[n % len(TOPICS)]
        (folder / f"note-{n:02d}.md").write_text(
            f"# Note {n} on {topic}\n\nPractice {topic} slowly at first, then build speed. "
            f"Drill number {n} keeps the {topic} habit honest in the practice pen.\n"
        )


def _count_calls(components: Components, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    encode = components.embedder.encode

    def counting(texts: list[str], **kwargs: Any) -> np.ndarray:
        calls.append(len(texts))
        return encode(texts, **kwargs)

    monkeypatch.setattr(components.embedder, "encode", counting)
    return calls


def test_small_files_share_encoder_calls_and_keep_their_own_vectors(
    make_settings: MakeSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "notes"
    _write(folder, 12)
    components = Components(make_settings())
    calls = _count_calls(components, monkeypatch)
    summary = components.ingestor.ingest([folder])
    assert summary.added_documents == 12 and not summary.errors
    assert len(calls) < 12 and sum(calls) == summary.added_chunks  # shared, nothing twice
    monkeypatch.undo()
    with read_session(components.engine) as session:
        rows = session.exec(select(Chunk, Document.title).join(Document)).all()
    for chunk, title in rows:  # each stored vector is its own chunk's, not a neighbour's
        draft = ChunkDraft(chunk.text, chunk.token_count, chunk.heading, chunk.location)
        alone = components.embedder.encode([embedding_input(title, draft)])[0]
        stored = np.frombuffer(chunk.embedding, dtype=np.float32)
        assert float(alone @ stored) > 0.999, chunk.text
    components.close()


def test_a_file_that_fails_to_encode_is_skipped_alone(
    make_settings: MakeSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fault injected into the real encoder for one file's text: the group it shares with
    others is retried file by file, and only that file is skipped."""
    folder = tmp_path / "notes"
    _write(folder, 4)
    (folder / "note-02.md").write_text("# Broken\n\nThis POISON note cannot be encoded here.\n")
    components = Components(make_settings())
    encode = components.embedder.encode

    def failing(texts: list[str], **kwargs: Any) -> np.ndarray:
        if any("POISON" in text for text in texts):
            raise ValueError("Unable to create tensor")
        return encode(texts, **kwargs)

    monkeypatch.setattr(components.embedder, "encode", failing)
    summary = components.ingestor.ingest([folder])
    assert summary.added_documents == 3 and summary.skipped_files == 1
    assert summary.errors[0]["path"].endswith("note-02.md")
    assert summary.errors[0]["code"] == "internal_error"
    monkeypatch.undo()
    again = components.ingestor.ingest([folder])  # the fault gone, the file comes in
    assert again.added_documents == 1 and again.unchanged_documents == 3
    components.close()
