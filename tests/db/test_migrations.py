"""Alembic migrations: a new database is built by them, the models and the migrations agree,
and a database made by the last release before migrations (c4bd719, stored in
tests/data/release-c4bd719, built by its make.py with that release's own code) upgrades
in place with nothing lost."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlmodel import SQLModel

from server.components import Components
from server.db import (
    MIGRATIONS,
    Chunk,
    Document,
    is_sqlite,
    make_engine,
    migrate,
    read_session,
    write_session,
)
from server.db.tables import is_lexical_index
from tests.conftest import ROOT, MakeSettings, run_cli, settings_for

RELEASE = ROOT / "tests" / "data" / "release-c4bd719"
HEAD = ScriptDirectory(str(MIGRATIONS)).get_current_head()
TABLES = ("document", "chunk", "conversation", "message", "ledgerentry", "answermetric")


def row_counts(database: Path) -> dict[str, int]:
    """Rows per table; users under their old table name or their new one (0003)."""
    with sqlite3.connect(database) as connection:
        counts = {t: connection.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}
        names = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
        users = "account" if "account" in names else '"user"'
        counts["users"] = connection.execute(f"SELECT count(*) FROM {users}").fetchone()[0]
    return counts


def release_copy(target: Path) -> Path:
    target.mkdir(parents=True)
    with (
        sqlite3.connect(RELEASE / "rodeoai.db") as source,
        sqlite3.connect(target / "rodeoai.db") as copy,
    ):
        source.backup(copy)
    return target  # no FAISS files: a cache, rebuilt from the stored embeddings


def test_a_new_database_is_built_by_the_migrations_and_matches_the_models(
    make_settings: MakeSettings,
) -> None:
    engine = make_engine(make_settings().engine_url)
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection,
            opts={"include_name": lambda name, type_, _: not is_lexical_index(name, type_)},
        )
        assert context.get_current_revision() == HEAD
        assert compare_metadata(context, SQLModel.metadata) == []
        tables = set(inspect(connection).get_table_names())
        if is_sqlite(connection):
            names = {row[0] for row in connection.exec_driver_sql("SELECT name FROM sqlite_master")}
            assert {"chunk_fts", "chunk_fts_insert", "chunk_fts_delete"} <= names
        else:
            columns = {c["name"] for c in inspect(connection).get_columns("chunk")}
            indexes = {i["name"] for i in inspect(connection).get_indexes("chunk")}
            assert "tsv" in columns and "chunk_tsv_gin" in indexes
    assert "account" in tables and "user" not in tables
    assert migrate(engine) == "current"


def test_the_lexical_index_follows_the_chunks_in_their_own_transaction(
    make_settings: MakeSettings,
) -> None:
    engine = make_engine(make_settings().engine_url)
    with write_session(engine) as session:
        doc = Document(source="t/lasso.md", title="Lasso care", kind="md", content_hash="x")
        session.add(doc)
        session.flush()
        session.add(
            Chunk(
                document_id=doc.id or 0,
                ordinal=0,
                text="Keep a nylon rope out of the sun.",
                token_count=9,
                content_hash="y",
                embedding=b"",
            )
        )
        session.flush()
        # Visible to the lexical index before the commit, in the same transaction...
        assert _lexical_hits(session, "nylon") == 1
        assert _lexical_hits(session, "lasso") == 1  # the document title counts too
        session.rollback()
    with read_session(engine) as session:  # ...and gone with the rollback
        assert _lexical_hits(session, "nylon") == 0


def _lexical_hits(session: Any, word: str) -> int:
    if is_sqlite(session.connection()):
        query = "SELECT count(*) FROM chunk_fts WHERE chunk_fts MATCH :w"
    else:
        query = "SELECT count(*) FROM chunk WHERE tsv @@ plainto_tsquery('english', :w)"
    return int(session.execute(text(query), {"w": word}).scalar_one())


@pytest.mark.sqlite_only  # the release wrote SQLite files; PostgreSQL support starts here
def test_the_last_release_database_upgrades_in_place_with_nothing_lost(tmp_path: Path) -> None:
    data = release_copy(tmp_path / "data")
    before = row_counts(data / "rodeoai.db")
    assert all(before.values()), before  # the fixture has rows in every table we check
    components = Components(settings_for(data, backends="extractive"))
    assert row_counts(data / "rodeoai.db") == before
    expected = json.loads((RELEASE / "expected.json").read_text())["top5"]
    hits = components.retriever.search("beginner header rope length", 5)
    assert [h.chunk_id for h in hits] == expected
    status = json.loads(run_cli("db", "status", data_dir=data).stdout)
    assert status["revision"] == status["newest"] == HEAD
    with sqlite3.connect(data / "rodeoai.db") as connection:  # 0002 added a column
        statuses = {row[0] for row in connection.execute("SELECT status FROM answermetric")}
    assert statuses == {"done"}


@pytest.mark.sqlite_only
def test_the_cli_upgrades_a_release_database(tmp_path: Path) -> None:
    data = release_copy(tmp_path / "data")
    status = json.loads(run_cli("db", "status", data_dir=data).stdout)
    assert status["revision"] is None and status["newest"] == HEAD
    done = run_cli("db", "upgrade", data_dir=data)
    assert done.returncode == 0, done.stderr
    assert f"schema at {HEAD}" in done.stdout and "baseline" in done.stderr
    assert "upgraded from 0001" in done.stderr
