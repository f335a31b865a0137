"""Alembic migrations: a new database is built by them, the models and the migrations agree,
and a database made by the last release before migrations (c4bd719, stored in
tests/data/release-c4bd719, built by its make.py with that release's own code) upgrades
in place with nothing lost."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlmodel import SQLModel

from server.components import Components
from server.db import MIGRATIONS, make_engine, migrate
from tests.conftest import ROOT, run_cli, settings_for

RELEASE = ROOT / "tests" / "data" / "release-c4bd719"
HEAD = ScriptDirectory(str(MIGRATIONS)).get_current_head()
TABLES = ("document", "chunk", "user", "conversation", "message", "ledgerentry", "answermetric")


def row_counts(database: Path) -> dict[str, int]:
    with sqlite3.connect(database) as connection:
        return {t: connection.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in TABLES}


def release_copy(target: Path) -> Path:
    target.mkdir(parents=True)
    with (
        sqlite3.connect(RELEASE / "rodeoai.db") as source,
        sqlite3.connect(target / "rodeoai.db") as copy,
    ):
        source.backup(copy)
    return target  # no FAISS files: a cache, rebuilt from the stored embeddings


def test_a_new_database_is_built_by_the_migrations_and_matches_the_models(
    tmp_path: Path,
) -> None:
    engine = make_engine(tmp_path / "new.db")
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection,
            opts={"include_name": lambda name, type_, _: not str(name).startswith("chunk_fts")},
        )
        assert context.get_current_revision() == HEAD
        assert compare_metadata(context, SQLModel.metadata) == []
        names = {row[0] for row in connection.exec_driver_sql("SELECT name FROM sqlite_master")}
    assert {"chunk_fts", "chunk_fts_insert", "chunk_fts_delete"} <= names
    assert migrate(engine) == "current"


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


def test_the_cli_upgrades_a_release_database(tmp_path: Path) -> None:
    data = release_copy(tmp_path / "data")
    status = json.loads(run_cli("db", "status", data_dir=data).stdout)
    assert status["revision"] is None and status["newest"] == HEAD
    done = run_cli("db", "upgrade", data_dir=data)
    assert done.returncode == 0, done.stderr
    assert f"schema at {HEAD}" in done.stdout and "baseline" in done.stderr
    assert "upgraded from 0001" in done.stderr
