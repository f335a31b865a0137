"""Search keeps the passages' rows between questions, and never serves one the database has
since changed: the cache belongs to one database generation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from server.components import Components
from server.config import Settings

QUESTION = "How long is a heading rope for a beginner?"


def _passage_reads(components: Components) -> list[str]:
    reads: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "JOIN document d ON d.id = c.document_id WHERE c.id IN" in statement:
            reads.append(statement)

    event.listen(components.engine, "before_cursor_execute", seen)
    return reads


def test_a_repeated_search_reads_no_passages_and_a_change_is_seen(
    kb_settings: Settings, tmp_path: Path
) -> None:
    components = Components(kb_settings)
    reads = _passage_reads(components)
    first = components.retriever.search(QUESTION, 5)
    assert len(reads) == 1
    again = components.retriever.search(QUESTION, 5)
    assert len(reads) == 1 and [h.text for h in again] == [h.text for h in first]

    top = first[0]
    changed = tmp_path / "rope.md"  # the top passage's document, rewritten under its source
    changed.write_text(
        "# Heading Rope Length\n\nBeginner headers in Sweetwater rope with a 31 foot rope.\n"
    )
    components.ingestor.remove(top.source)
    components.ingestor.ingest([changed])
    after = components.retriever.search(QUESTION, 5)
    assert len(reads) == 2  # the generation moved on: read afresh
    assert top.text not in [h.text for h in after]
    assert any("Sweetwater" in h.text for h in after)
    components.close()


@pytest.mark.parametrize("size", [2])
def test_the_cache_keeps_only_the_most_recent_rows(
    kb_settings: Settings, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    from server.rag import retriever

    monkeypatch.setattr(retriever, "PASSAGE_CACHE", size)
    components = Components(kb_settings)
    reads = _passage_reads(components)
    components.retriever.search(QUESTION, 5)
    components.retriever.search(QUESTION, 5)
    assert len(reads) == 2  # five rows never fit in two: the rest are read again
    # only those the cache no longer held
    assert reads[1].split("IN (")[1].count(",") + 1 == 5 - size
    assert len(components.retriever._rows) == size
    components.close()
