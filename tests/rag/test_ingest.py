"""Ingestion against real SQLite, FAISS and the bundled embedder: idempotent, change-aware."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import text

from server.components import Components
from server.db import current_generation
from server.errors import NotFound
from tests import databases
from tests.conftest import MakeSettings, run_cli

ROPE_DOC = """---
title: Test Rope Guide
category: team-roping
events: [heading]
skill_level: beginner
source: test fixture
---
# Test Rope Guide

## Rope length

Beginner headers in this test commonly use a thirty-one foot zebra-striped rope.

## Loop size

A wide loop of about seven feet suits a beginner header learning to rope slow steers.
"""


def all_chunk_texts(components: Components) -> list[str]:
    with components.engine.connect() as conn:
        return [r[0] for r in conn.execute(text("SELECT text FROM chunk"))]


def fts_rows(components: Components) -> int:
    return databases.lexical_rows(components.engine)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "rope.md").write_text(ROPE_DOC)
    (docs / "notes.txt").write_text("Goat tying ties must hold for six seconds in this test.")
    return docs


def test_reingesting_unchanged_files_adds_nothing(
    make_settings: MakeSettings, folder: Path
) -> None:
    components = Components(make_settings())
    first = components.ingestor.ingest([folder])
    assert (first.added_documents, first.unchanged_documents) == (2, 0)
    generation = current_generation(components.engine)
    chunks_before = all_chunk_texts(components)

    second = components.ingestor.ingest([folder])
    assert (second.added_documents, second.updated_documents, second.unchanged_documents) == (
        0,
        0,
        2,
    )
    assert second.added_chunks == 0 and second.removed_chunks == 0
    assert current_generation(components.engine) == generation
    assert all_chunk_texts(components) == chunks_before
    assert components.index.count == len(chunks_before) == fts_rows(components)


def test_changed_file_replaces_its_chunks_with_no_stale_chunk(
    make_settings: MakeSettings, folder: Path
) -> None:
    components = Components(make_settings())
    components.ingestor.ingest([folder])
    assert components.retriever.search("zebra-striped rope", 1)[0].source.endswith("rope.md")

    (folder / "rope.md").write_text(ROPE_DOC.replace("zebra-striped", "polka-dotted"))
    summary = components.ingestor.ingest([folder])
    assert (summary.updated_documents, summary.unchanged_documents) == (1, 1)
    assert summary.removed_chunks >= 1 and summary.added_chunks >= 1

    texts = " ".join(all_chunk_texts(components))
    assert "zebra" not in texts and "polka-dotted" in texts
    assert components.index.count == len(all_chunk_texts(components)) == fts_rows(components)
    # Lexical search has no trace of the old text; the new text ranks first.
    assert components.retriever.lexical("zebra", 5) == []
    assert "polka-dotted" in components.retriever.search("polka-dotted rope", 1)[0].text


def test_remove_deletes_a_source_everywhere(make_settings: MakeSettings, folder: Path) -> None:
    components = Components(make_settings())
    components.ingestor.ingest([folder])
    source = components.ingestor.source_name(folder / "rope.md")

    removed = components.ingestor.remove(source)
    assert removed >= 1
    assert all("zebra" not in t for t in all_chunk_texts(components))
    assert components.index.count == len(all_chunk_texts(components)) == fts_rows(components)
    assert all(h.source != source for h in components.retriever.search("zebra rope", 5))
    with pytest.raises(NotFound):
        components.ingestor.remove(source)


def test_file_deleted_from_an_ingested_folder_is_pruned(
    make_settings: MakeSettings, folder: Path
) -> None:
    components = Components(make_settings())
    components.ingestor.ingest([folder])
    (folder / "notes.txt").unlink()
    summary = components.ingestor.ingest([folder])
    assert summary.removed_documents == 1 and summary.unchanged_documents == 1
    assert all("Goat tying" not in t for t in all_chunk_texts(components))


def test_bad_files_are_reported_and_counted_without_aborting_the_batch(
    make_settings: MakeSettings, folder: Path
) -> None:
    (folder / "empty.md").write_text("")
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4 garbage")
    components = Components(make_settings())
    summary = components.ingestor.ingest([folder, folder.parent / "missing.md"])
    assert summary.added_documents == 2
    assert summary.skipped_files == 3
    assert {e["code"] for e in summary.errors} == {"empty_file", "unreadable_file", "not_found"}


def test_knowledge_files_are_named_relative_to_the_knowledge_folder(
    make_settings: MakeSettings,
) -> None:
    components = Components(make_settings())
    knowledge = components.settings.knowledge_dir
    assert components.ingestor.source_name(knowledge / "dally-safety.md") == (
        "knowledge/dally-safety.md"
    )


@pytest.mark.one_pass  # the output format; ingestion itself runs on both engines above
def test_cli_ingest_prints_a_summary_line_and_json(tmp_path: Path, folder: Path) -> None:
    data = tmp_path / "cli-data"
    first = run_cli("ingest", str(folder), data_dir=data)
    assert first.returncode == 0, first.stderr
    assert "documents: 2 added, 0 updated, 0 unchanged, 0 removed, 0 skipped" in first.stdout

    (folder / "empty.txt").write_text("")
    second = run_cli("ingest", str(folder), "--json", data_dir=data)
    assert second.returncode == 0, second.stderr
    summary = json.loads(second.stdout)
    assert summary["unchanged_documents"] == 2
    assert summary["skipped_files"] == 1
    assert summary["errors"][0]["code"] == "empty_file"
    assert "skipped" in second.stderr  # reported to the operator, not swallowed

    removed = run_cli("remove", "no/such/source.md", data_dir=data)
    assert removed.returncode == 2 and "no document with source" in removed.stderr
