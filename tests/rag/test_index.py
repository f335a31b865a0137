"""The FAISS index is a rebuildable cache: missing, corrupt or stale files heal at start-up."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from server.components import Components
from server.db import set_meta, write_session
from server.errors import IndexUnavailable
from server.main import create_app
from tests.conftest import MakeSettings

DOC = "# Barrels\n\n## Penalty\n\nA knocked barrel commonly adds five seconds to the run.\n"


@pytest.fixture
def ingested(make_settings: MakeSettings, tmp_path: Path) -> Components:
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(3):
        (docs / f"doc{i}.md").write_text(DOC + f"\nDocument number {i} talks about pattern {i}.\n")
    components = Components(make_settings())
    components.ingestor.ingest([docs])
    return components


def reopen(components: Components) -> Components:
    fresh = Components(components.settings)
    assert fresh.index.count == fresh.chunk_total()
    return fresh


def test_saved_index_loads_without_rebuilding(ingested: Components, caplog) -> None:
    files = sorted(p.name for p in ingested.settings.index_dir.iterdir())
    assert files == [f"chunks-{ingested.index.generation}.faiss", "manifest.json"]  # no temp files
    with caplog.at_level(logging.WARNING):
        reopen(ingested)
    assert "rebuilding" not in caplog.text


@pytest.mark.parametrize(
    "damage",
    [
        "delete_folder",
        "garbage_index",
        "garbage_manifest",
        "truncated_index",
        "manifest_points_nowhere",
    ],
)
def test_missing_or_corrupt_index_is_rebuilt_with_a_log_line(
    ingested: Components, damage: str, caplog
) -> None:
    folder = ingested.settings.index_dir
    index_file = next(folder.glob("chunks-*.faiss"))
    if damage == "delete_folder":
        shutil.rmtree(folder)
    elif damage == "garbage_index":
        index_file.write_bytes(b"not a faiss index at all")
    elif damage == "garbage_manifest":
        (folder / "manifest.json").write_text("{broken json")
    elif damage == "truncated_index":
        index_file.write_bytes(index_file.read_bytes()[:100])
    else:
        index_file.unlink()
    with caplog.at_level(logging.WARNING, logger="server.rag.vector_index"):
        fresh = reopen(ingested)
    assert "rebuilding vector index" in caplog.text
    assert fresh.retriever.search("knocked barrel penalty", 1)[0].text.startswith("A knocked")


def test_index_older_than_the_database_is_rebuilt(
    ingested: Components, tmp_path: Path, caplog
) -> None:
    folder = ingested.settings.index_dir
    backup = tmp_path / "old-index"
    shutil.copytree(folder, backup)
    extra = tmp_path / "extra.md"
    extra.write_text("# Goats\n\nA goat tie must hold for six seconds.\n")
    ingested.ingestor.ingest([extra])
    shutil.rmtree(folder)
    shutil.copytree(backup, folder)  # as if the process died before the last save
    with caplog.at_level(logging.WARNING, logger="server.rag.vector_index"):
        fresh = reopen(ingested)
    assert "generation" in caplog.text
    assert "goat" in fresh.retriever.search("goat tie six seconds", 1)[0].text.lower()


def test_embeddings_from_another_embedder_are_a_clear_error_with_the_fix(
    ingested: Components,
) -> None:
    with write_session(ingested.engine) as session:
        set_meta(session, "embedder", "some-other-model")
    with pytest.raises(IndexUnavailable) as caught:
        Components(ingested.settings).index  # noqa: B018
    assert caught.value.code == "embedder_mismatch"
    assert "rodeoai index rebuild --reembed" in caught.value.message

    fixer = Components(ingested.settings)
    assert fixer.make_ingestor(fixer.unopened_index).reembed() == fixer.chunk_total()
    reopen(ingested)


def test_app_start_rebuilds_a_corrupt_index(ingested: Components) -> None:
    for file in ingested.settings.index_dir.glob("chunks-*.faiss"):
        file.write_bytes(b"\x00" * 64)
    with TestClient(create_app(ingested.settings)) as client:
        health = client.get("/health").json()
    assert health["status"] == "ok"
    assert health["index"]["vectors"] == health["chunks"] > 0
