"""SIGKILL during ingestion: after a restart the database and the index agree, and nothing
committed is lost or half-applied (on SQLite and on PostgreSQL)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from server.components import Components
from tests import databases
from tests.conftest import ROOT, settings_for

FILES = 64  # enough that both kills land mid-way: a file commits every few milliseconds
PARAGRAPH = (
    "Roping drill {i}: the header swings a {n} foot loop while the horse rates the steer, and "
    "the heeler waits for the hop before delivering under the belly. "
)


def write_corpus(folder: Path, files: int) -> None:
    folder.mkdir()
    for i in range(files):
        body = "\n\n".join(PARAGRAPH.format(i=i, n=5 + (i + k) % 4) * 3 for k in range(4))
        (folder / f"drill-{i:03d}.md").write_text(f"# Drill {i}\n\n## Practice\n\n{body}\n")


def documents_in(data: Path) -> int:
    """Documents committed so far, read as they are (no migration, no file created)."""
    url = databases.database_url(data) or f"sqlite:///file:{data / 'rodeoai.db'}?mode=ro&uri=true"
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM document")).scalar_one())
    except DBAPIError:
        return 0  # no database or no tables yet
    finally:
        engine.dispose()


def start_ingest(data: Path, corpus: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "RODEOAI_DATA_DIR": str(data),
        "RODEOAI_LOG_LEVEL": "WARNING",
        **databases.database_env(data),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "server.cli", "ingest", str(corpus)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def kill_after(process: subprocess.Popen[bytes], data: Path, documents: int) -> int:
    deadline = time.monotonic() + 120
    while documents_in(data) < documents and time.monotonic() < deadline:
        assert process.poll() is None, "ingestion finished before it could be killed"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    return documents_in(data)


def assert_consistent(components: Components) -> None:
    with components.engine.connect() as conn:
        chunks = conn.execute(text("SELECT count(*) FROM chunk")).scalar_one()
        half_applied = conn.execute(
            text(
                "SELECT count(*) FROM document d WHERE d.chunk_count != "
                "(SELECT count(*) FROM chunk c WHERE c.document_id = d.id)"
            )
        ).scalar_one()
    assert components.index.count == chunks == databases.lexical_rows(components.engine)
    assert half_applied == 0


def test_sigkill_mid_ingestion_leaves_a_consistent_restartable_store(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    write_corpus(corpus, FILES)
    data = tmp_path / "data"

    for target in (4, 24):  # kill early, then again after the restart has made progress
        process = start_ingest(data, corpus)
        committed = kill_after(process, data, target)
        assert 0 < committed < FILES
        restarted = Components(settings_for(data))
        assert_consistent(restarted)  # index rebuilt from SQLite where it lagged
        hit = restarted.retriever.search("heeler waits for the hop", 1)[0]
        assert hit.source.endswith(".md")
        assert documents_in(data) >= committed  # nothing committed was lost

    finished = Components(settings_for(data))
    summary = finished.ingestor.ingest([corpus])
    assert summary.skipped_files == 0
    assert summary.added_documents + summary.unchanged_documents == FILES
    assert summary.unchanged_documents >= 24
    assert documents_in(data) == FILES
    assert_consistent(finished)
