"""`rodeoai backup` and `rodeoai restore`, on SQLite and on PostgreSQL (`--database
postgresql`): a backup taken while a real server answers chats and a document is ingested
restores into a fresh database with the manifest's row counts and the same search results;
damaged, unfinished or misdirected backups, and restores over a database in use or holding
data (without --force), are refused with one line and exit code 2."""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

import httpx
import pytest

from server.components import Components
from server.config import Settings
from server.db import make_engine
from server.db.backup import BackupError, Manifest, backup, restore, row_counts, verify
from server.db.pgtools import libpq
from tests import databases
from tests.conftest import run_cli, settings_for
from tests.servers import rodeoai_server

QUESTION = "What's the penalty when the heeler only gets one hind leg?"
UNRELATED = """---
title: Knitting a Saddle Blanket Cover
---
# Knitting a Saddle Blanket Cover

Cast on ninety stitches of worsted wool and knit a garter border of eight rows. Purl the
wrong side, and bind off loosely so the cover lies flat over the blanket.
"""


def _top5(url: str) -> list[str]:
    reply = httpx.get(f"{url}/api/search", params={"q": QUESTION, "k": 5}, timeout=60)
    assert reply.status_code == 200, reply.text
    return [hit["text"] for hit in reply.json()]


async def _chats(url: str, count: int) -> list[int]:
    ask = {"messages": [{"role": "user", "content": "How do I keep my barrel pattern tight?"}]}
    async with httpx.AsyncClient(base_url=url, timeout=180) as http:
        replies = await asyncio.gather(*(http.post("/api/chat", json=ask) for _ in range(count)))
    return [reply.status_code for reply in replies]


def _answers(settings: Settings) -> int:
    return row_counts(settings).get("answermetric", 0)


def _one_clear_line(stderr: str, *words: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert all(word in lines[0] for word in words), stderr


def test_a_backup_taken_while_the_server_answers_restores_the_same_knowledge(
    kb_settings: Settings, tmp_path: Path
) -> None:
    data, dest = kb_settings.data_dir, tmp_path / "backup"
    extra = tmp_path / "extra" / "saddle-blanket-knitting.md"
    extra.parent.mkdir()
    extra.write_text(UNRELATED)
    documents = row_counts(kb_settings)["document"]
    # The extractive backend answers through the same chat path and records each answer
    # as the model would; the model's generation only made this test slower (2 cores).
    with rodeoai_server(
        data, chat_guest_limit="1000/minute", backends="extractive", llm_queue="64"
    ) as url:
        before = _top5(url)
        with ThreadPoolExecutor(2) as pool:
            chatting = pool.submit(asyncio.run, _chats(url, 50))  # the load
            ingesting = pool.submit(run_cli, "ingest", str(extra), data_dir=data)
            deadline = time.monotonic() + 120  # a cap for a stuck test, not a timing check
            while _answers(kb_settings) < 2 and time.monotonic() < deadline:
                time.sleep(0.1)  # back up once answers are being recorded
            backed = run_cli("backup", str(dest), data_dir=data)
            statuses, ingested = chatting.result(), ingesting.result()
        after = _top5(url)
        in_use = run_cli("restore", str(dest), "--force", data_dir=data)
    assert in_use.returncode == 2, in_use.stdout
    _one_clear_line(in_use.stderr, "in use", "stop the server")
    assert backed.returncode == 0, backed.stderr
    assert statuses == [200] * 50 and ingested.returncode == 0, (statuses, ingested.stderr)
    assert "backed up" in backed.stdout

    manifest = verify(dest)
    assert manifest.engine == ("postgresql" if databases.on_postgres() else "sqlite")
    assert manifest.schema_revision and manifest.counts["answermetric"] >= 2
    assert manifest.counts["document"] in (documents, documents + 1)  # before or after it
    expected = before if manifest.counts["document"] == documents else after

    fresh = tmp_path / "restored"  # on PostgreSQL a fresh database of its own
    restored = run_cli("restore", str(dest), data_dir=fresh)
    assert restored.returncode == 0, restored.stderr
    assert f"chunk {manifest.counts['chunk']}" in restored.stdout
    settings = settings_for(fresh)
    if not databases.on_postgres():
        with closing(sqlite3.connect(settings.database_path)) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert row_counts(settings) == manifest.counts
    if manifest.index:  # the index came along: it is current, so nothing is rebuilt
        index = json.loads((settings.index_dir / "manifest.json").read_text())
        assert index["generation"] == manifest.database_generation
        assert index["count"] == manifest.counts["chunk"]
    components = Components(settings)
    try:
        hits = components.retriever.search(QUESTION, 5)
    finally:
        components.close()
    assert [hit.text for hit in hits] == expected


@pytest.fixture
def taken(kb_settings: Settings, tmp_path: Path) -> tuple[Path, Manifest]:
    """A backup of a private copy of the starter knowledge, made in this process."""
    dest = tmp_path / "backup"
    return dest, backup(kb_settings, dest)


def test_damaged_and_unfinished_backups_are_refused_and_nothing_is_restored(
    taken: tuple[Path, Manifest], tmp_path: Path
) -> None:
    source, manifest = taken
    assert manifest.index is not None  # taken at rest: the index matches and comes along
    damaged = shutil.copytree(source, tmp_path / "damaged")
    database = damaged / manifest.database_file
    raw = bytearray(database.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    database.write_bytes(bytes(raw))
    unfinished = shutil.copytree(source, tmp_path / "unfinished")
    (unfinished / "manifest.json").unlink()

    fresh = tmp_path / "fresh"
    refused = run_cli("restore", str(damaged), data_dir=fresh)
    assert refused.returncode == 2, refused.stdout
    _one_clear_line(refused.stderr, "damaged", manifest.database_file, "checksum")
    refused = run_cli("restore", str(unfinished), data_dir=fresh)
    assert refused.returncode == 2, refused.stdout
    _one_clear_line(refused.stderr, "unfinished", "manifest.json")
    other = shutil.copytree(source, tmp_path / "other")
    raw_manifest = json.loads((other / "manifest.json").read_text())
    raw_manifest["engine"] = "sqlite" if databases.on_postgres() else "postgresql"
    (other / "manifest.json").write_text(json.dumps(raw_manifest))
    settings = settings_for(fresh)
    with pytest.raises(BackupError, match="same kind of database"):
        restore(settings, other)
    if databases.on_postgres():
        assert not any(row_counts(settings).values())
    else:
        assert not settings.database_path.exists()


def test_restoring_over_a_database_that_holds_data_needs_force(
    taken: tuple[Path, Manifest], kb_settings: Settings
) -> None:
    source, manifest = taken
    data = kb_settings.data_dir
    engine = make_engine(kb_settings.engine_url)
    with engine.begin() as conn:  # a change after the backup, which a restore undoes
        conn.exec_driver_sql("DELETE FROM chunk WHERE id IN (SELECT min(id) FROM chunk)")
    engine.dispose()
    refused = run_cli("restore", str(source), data_dir=data)
    assert refused.returncode == 2, refused.stdout
    _one_clear_line(refused.stderr, "not empty", "--force")
    assert row_counts(kb_settings)["chunk"] == manifest.counts["chunk"] - 1
    forced = run_cli("restore", str(source), "--force", data_dir=data)
    assert forced.returncode == 0, forced.stderr
    assert row_counts(kb_settings) == manifest.counts


def test_a_backup_goes_only_into_an_empty_or_new_folder(
    kb_settings: Settings, tmp_path: Path
) -> None:
    dest = tmp_path / "busy"
    dest.mkdir()
    (dest / "notes.txt").write_text("keep me")
    refused = run_cli("backup", str(dest), data_dir=kb_settings.data_dir)
    assert refused.returncode == 2, refused.stdout
    _one_clear_line(refused.stderr, "not empty")
    assert [p.name for p in dest.iterdir()] == ["notes.txt"]
    with pytest.raises(BackupError, match="not a folder"):
        backup(kb_settings, dest / "notes.txt")


def test_the_database_password_stays_out_of_command_lines_and_messages() -> None:
    db = libpq("postgresql+psycopg://rodeo:s3cr%27et@/rodeoai?host=/run/pg&sslmode=prefer")
    assert "s3cr" not in db.conninfo and db.env["PGPASSWORD"] == "s3cr'et"
    for part in ("dbname='rodeoai'", "user='rodeo'", "host='/run/pg'", "sslmode='prefer'"):
        assert part in db.conninfo
    assert db.scrub("authentication failed for s3cr'et") == "authentication failed for ***"
