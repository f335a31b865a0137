"""RODEOAI_VECTOR_STORE=pgvector: the vectors live in PostgreSQL under an HNSW index, on the
real pgvector that PyPI pgserver ships. It must find what FAISS finds on the starter
knowledge, follow ingestion and deletion in the chunks' own transactions, survive a restart
without copying or encoding anything, and fill itself from the stored embeddings when an
existing database switches to it. Its speed and recall at 100,000 chunks are in `make bench`."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlmodel import SQLModel

from server.components import Components
from server.config import Settings
from server.db import make_engine, migrate
from server.db.backup import backup, restore
from server.db.tables import is_unmapped
from server.errors import IndexUnavailable
from server.main import create_app
from server.rag import ingest, pgvector_schema
from server.rag.pgvector_schema import HNSW_INDEX, SEARCH_SETTINGS_SQL, SEARCH_SQL, vector_literal
from server.rag.pgvector_store import PgVectorStore
from tests import databases
from tests.conftest import run_cli, settings_for
from tests.rag.test_search_quality import QUESTIONS
from tests.servers import copy_data

postgres_only = pytest.mark.skipif(
    not databases.on_postgres(),
    reason="pgvector lives in PostgreSQL: the `--database postgresql` pass runs it",
)
NEW_DOC = "# Zebu crossbreds\n\nBrahman zebu crossbreds are the steers of choice in Florida.\n"


def pgvector_copy(shared_data: Path, target: Path) -> Settings:
    """A private copy of the ingested starter knowledge, switched to pgvector, with no FAISS
    files at all (so any written by mistake would show)."""
    data = copy_data(shared_data, target)
    for path in (data / "index").iterdir():
        path.unlink()
    (data / "index").rmdir()
    return settings_for(data, vector_store="pgvector", backends="extractive")


def vectors_of(components: Components, chunk_ids: list[int]) -> dict[int, np.ndarray]:
    with components.engine.connect() as conn:
        rows = conn.execute(
            text("SELECT chunk_id, embedding::text FROM chunk_vector WHERE chunk_id = ANY(:ids)"),
            {"ids": chunk_ids},
        ).all()
    return {int(i): np.array(v.strip("[]").split(","), dtype=np.float32) for i, v in rows}


def stored_embeddings(components: Components, source: str) -> dict[int, np.ndarray]:
    with components.engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT c.id, c.embedding FROM chunk c JOIN document d ON d.id = c.document_id "
                "WHERE d.source = :s"
            ),
            {"s": source},
        ).all()
    return {int(i): np.frombuffer(blob, dtype=np.float32) for i, blob in rows}


def table_rows(components: Components) -> int:
    with components.engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM chunk_vector")).scalar_one())


def source_of(components: Components, name: str) -> str:
    return next(d["source"] for d in components.ingestor.documents() if d["source"].endswith(name))


@pytest.fixture(scope="module")
def switched(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Components]:
    """One switched copy for the read-only tests."""
    components = Components(pgvector_copy(shared_data, tmp_path_factory.mktemp("pg") / "kb"))
    yield components
    components.close()


@pytest.fixture
def pg_settings(shared_data: Path, tmp_path: Path) -> Settings:
    return pgvector_copy(shared_data, tmp_path / "kb")


def test_pgvector_on_sqlite_is_refused_with_the_fix_in_the_message(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None, data_dir=tmp_path, vector_store="pgvector")  # type: ignore[call-arg]
    message = str(caught.value)
    assert "RODEOAI_VECTOR_STORE=pgvector" in message and "SQLite" in message
    assert "RODEOAI_DATABASE_URL=postgresql+psycopg://" in message
    url = "postgresql+psycopg://rodeo@db.example/rodeoai"
    accepted = Settings(_env_file=None, database_url=url, vector_store="pgvector")  # type: ignore[call-arg]
    assert accepted.vector_store == "pgvector"
    assert Settings(_env_file=None, data_dir=tmp_path).vector_store == "faiss"  # type: ignore[call-arg]


@postgres_only
def test_the_same_rankings_as_faiss_for_the_search_quality_questions(
    shared_components: Components, switched: Components
) -> None:
    """Dense: the whole candidate pool the fusion reads (40), for every question. Hybrid:
    the top 5 through the retriever, for a spread of them (each costs a lexical query)."""
    pg = switched
    assert isinstance(pg.index, PgVectorStore) and shared_components.index.kind == "faiss"
    assert pg.index.count == pg.chunk_total() == shared_components.index.count
    pool = pg.settings.candidates
    vectors = shared_components.embedder.encode([q["question"] for q in QUESTIONS])
    differ = [
        item["question"]
        for item, vector in zip(QUESTIONS, vectors, strict=True)
        if [i for i, _ in pg.index.search(vector, pool)]
        != [i for i, _ in shared_components.index.search(vector, pool)]
    ]
    assert differ == [], f"{len(differ)} of {len(QUESTIONS)} dense rankings differ"
    for item in QUESTIONS[::7]:
        question = item["question"]
        theirs = [h.chunk_id for h in shared_components.retriever.search(question, 5)]
        assert [h.chunk_id for h in pg.retriever.search(question, 5)] == theirs, question


def plan(store: PgVectorStore, vector: np.ndarray) -> str:
    """The query plan of the store's search, as it would run now."""
    with store.engine.begin() as conn:
        conn.execute(text(SEARCH_SETTINGS_SQL), store.search_settings(40))
        rows = conn.execute(text("EXPLAIN " + SEARCH_SQL), {"q": vector_literal(vector), "k": 40})
        return "\n".join(row[0] for row in rows)


@postgres_only
def test_above_the_threshold_the_hnsw_index_answers_with_high_recall(
    pg_settings: Settings, shared_components: Components
) -> None:
    exact = shared_components.index  # FAISS, flat
    vectors = shared_components.embedder.encode([q["question"] for q in QUESTIONS])
    below = Components(pg_settings)
    above = Components(
        settings_for(
            pg_settings.data_dir, vector_store="pgvector", **{"vector_ann_min_chunks": 200}
        )
    )
    try:
        assert isinstance(below.index, PgVectorStore) and isinstance(above.index, PgVectorStore)
        assert not below.index.approximate and above.index.approximate
        assert HNSW_INDEX not in plan(below.index, vectors[0])  # exact: a scan
        assert f"Index Scan using {HNSW_INDEX}" in plan(above.index, vectors[0])
        recall = np.mean(
            [
                len({i for i, _ in above.index.search(v, 10)} & {i for i, _ in exact.search(v, 10)})
                / 10
                for v in vectors
            ]
        )
        print(f"HNSW recall@10 on the starter knowledge: {recall:.3f}")
        assert recall >= 0.95
    finally:
        below.close()
        above.close()


@postgres_only
def test_scores_are_the_inner_products_faiss_gives(
    shared_components: Components, switched: Components
) -> None:
    pg = switched
    vector = shared_components.embedder.encode([QUESTIONS[0]["question"]])[0]
    theirs = dict(shared_components.index.search(vector, 5))
    ours = dict(pg.index.search(vector, 5))
    assert ours.keys() == theirs.keys()
    assert all(abs(ours[i] - theirs[i]) < 1e-5 for i in ours)


@postgres_only
def test_switching_copies_the_stored_vectors_and_builds_the_hnsw_index(
    pg_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    components = Components(pg_settings)
    try:
        with caplog.at_level(logging.INFO, logger="server.rag"):
            outcome = components.unopened_index.open(components.engine)
        chunks = components.chunk_total()
        assert outcome == f"made the table, copied {chunks} vectors from the stored embeddings"
        assert f"{chunks} of {chunks} vectors copied" in caplog.text, caplog.text
        assert "HNSW index built" in caplog.text
        assert components.unopened_index.open(components.engine) == "current"  # once only
        with components.engine.connect() as conn:
            valid = conn.execute(
                text("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:i)"),
                {"i": HNSW_INDEX},
            ).scalar()
        assert valid is True
        source = source_of(components, "tie-down-roping.md")
        stored = stored_embeddings(components, source)
        copied = vectors_of(components, list(stored))
        assert copied.keys() == stored.keys()
        assert all(np.array_equal(copied[i], stored[i]) for i in stored)  # bit for bit
        assert not (pg_settings.data_dir / "index").exists()  # no FAISS file written
    finally:
        components.close()


@postgres_only
def test_ingestion_writes_the_vectors_in_the_chunks_transaction(
    pg_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    components = Components(pg_settings)
    try:
        index = components.index
        before = table_rows(components)
        doc = tmp_path / "zebu.md"
        doc.write_text(NEW_DOC)

        def fail(*_args: Any) -> None:
            raise RuntimeError("the disk is full")

        monkeypatch.setattr(ingest, "set_meta", fail)  # after the vectors, before the commit
        summary = components.ingestor.ingest([doc])
        assert summary.skipped_files == 1 and table_rows(components) == before  # rolled back
        monkeypatch.undo()

        summary = components.ingestor.ingest([doc])
        assert summary.added_chunks == 1 and not summary.errors
        source = source_of(components, "zebu.md")
        stored = stored_embeddings(components, source)
        assert vectors_of(components, list(stored)).keys() == stored.keys()
        assert index.count == table_rows(components) == before + 1 == components.chunk_total()
        hits = components.retriever.search("Brahman zebu crossbred steers", 1, mode="dense")
        assert hits[0].source == source
        assert not (pg_settings.data_dir / "index").exists()  # nothing saved to disk
    finally:
        components.close()


@postgres_only
def test_removing_a_document_removes_its_vectors(pg_settings: Settings) -> None:
    components = Components(pg_settings)
    try:
        index = components.index
        source = source_of(components, "tie-down-roping.md")
        ids = list(stored_embeddings(components, source))
        vector = components.embedder.encode(["How long does a tie-down roper's tie hold?"])[0]
        assert set(ids) & {i for i, _ in index.search(vector, 5)}
        assert components.ingestor.remove(source) == len(ids) > 0
        assert vectors_of(components, ids) == {}  # gone by the foreign key's cascade
        assert index.count == table_rows(components) == components.chunk_total()
        assert not set(ids) & {i for i, _ in index.search(vector, 40)}
    finally:
        components.close()


@postgres_only
def test_a_restart_finds_the_vectors_without_copying_or_encoding(
    pg_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = Components(pg_settings)
    vector = first.embedder.encode([QUESTIONS[3]["question"]])[0]
    expected = first.index.search(vector, 10)
    first.close()

    def refuse(_texts: list[str]) -> np.ndarray:
        raise AssertionError("a restart encoded text")

    def no_copy(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("a restart wrote vectors")

    monkeypatch.setattr(first.embedder, "encode", refuse)  # the same cached embedder
    monkeypatch.setattr(pgvector_schema, "write_vectors", no_copy)
    again = Components(pg_settings)
    try:
        assert again.index.open(again.engine) == "current"
        assert again.index.count == again.chunk_total() > 0
        assert again.index.search(vector, 10) == expected
    finally:
        again.close()


@postgres_only
def test_chunks_a_faiss_writer_added_get_their_vectors_at_the_next_search(
    pg_settings: Settings, tmp_path: Path
) -> None:
    pg = Components(pg_settings)
    faiss_writer = Components(settings_for(pg_settings.data_dir))  # the CLI, set to FAISS
    try:
        pg.index  # noqa: B018
        doc = tmp_path / "zebu.md"
        doc.write_text(NEW_DOC)
        faiss_writer.ingestor.ingest([doc])
        source = source_of(pg, "zebu.md")
        assert vectors_of(pg, list(stored_embeddings(pg, source))) == {}  # written without
        hits = pg.retriever.search("Brahman zebu crossbred steers", 1, mode="dense")
        assert hits[0].source == source
        assert pg.index.count == table_rows(pg) == pg.chunk_total()
    finally:
        faiss_writer.close()
        pg.close()


@postgres_only
def test_rebuild_repairs_vectors_that_differ_from_the_stored_embeddings(
    pg_settings: Settings,
) -> None:
    components = Components(pg_settings)
    try:
        source = source_of(components, "tie-down-roping.md")
        stored = stored_embeddings(components, source)
        spoiled = next(iter(stored))
        with components.engine.begin() as conn:
            conn.execute(
                text("UPDATE chunk_vector SET embedding = :v WHERE chunk_id = :i"),
                {"v": "[" + ",".join(["0.05"] * components.embedder.dimension) + "]", "i": spoiled},
            )
        assert not np.array_equal(vectors_of(components, [spoiled])[spoiled], stored[spoiled])
        components.index.rebuild(components.engine)
        assert np.array_equal(vectors_of(components, [spoiled])[spoiled], stored[spoiled])
        assert components.index.count == components.chunk_total()
    finally:
        components.close()


@postgres_only
def test_the_models_and_migrations_still_agree_with_the_vector_table_present(
    switched: Components,
) -> None:
    pg = switched
    with pg.engine.connect() as conn:
        assert "chunk_vector" in {
            r[0] for r in conn.execute(text("SELECT tablename FROM pg_tables"))
        }
        context = MigrationContext.configure(
            conn, opts={"include_name": lambda name, type_, _: not is_unmapped(name, type_)}
        )
        assert compare_metadata(context, SQLModel.metadata) == []
    assert migrate(pg.engine) == "current"


@postgres_only
def test_without_the_right_to_create_the_extension_the_error_says_what_to_do(
    pg_settings: Settings,
) -> None:
    owner = Components(pg_settings)  # the schema, made by the suite's superuser
    role = f"rodeo_plain_{uuid.uuid4().hex[:8]}"
    with owner.engine.begin() as conn:
        conn.execute(text(f"CREATE ROLE {role} LOGIN"))
        conn.execute(text(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}"))
    url = make_url(str(pg_settings.database_url)).set(username=role)
    plain = make_engine(url.render_as_string(hide_password=False), upgrade=False)
    store = PgVectorStore(plain, embedder=owner.embedder.name, dimension=owner.embedder.dimension)
    try:
        with pytest.raises(IndexUnavailable) as caught:
            store.open(plain)
        assert caught.value.code == "pgvector_unavailable"
        message = caught.value.message
        assert "creating it failed: permission denied" in message, message
        assert "CREATE EXTENSION vector" in message and "RODEOAI_VECTOR_STORE=faiss" in message
    finally:
        plain.dispose()
        with owner.engine.begin() as conn:
            conn.execute(text(f"DROP OWNED BY {role}"))
            conn.execute(text(f"DROP ROLE {role}"))
        owner.close()


@postgres_only
def test_a_backup_from_before_pgvector_restores_over_a_pgvector_database(
    shared_data: Path, pg_settings: Settings, tmp_path: Path
) -> None:
    """The old dump knows no chunk_vector, whose foreign key would stop pg_restore from
    dropping `chunk`: the restore drops it, and the next start fills it again."""
    manifest = backup(settings_for(shared_data), tmp_path / "backup")
    components = Components(pg_settings)
    components.ingestor.remove(source_of(components, "tie-down-roping.md"))
    components.close()
    restore(pg_settings, tmp_path / "backup", force=True)
    again = Components(pg_settings)
    try:
        assert again.index.count == again.chunk_total() == manifest.counts["chunk"]
        assert table_rows(again) == again.chunk_total()
    finally:
        again.close()


@postgres_only
def test_index_status_reports_the_pgvector_table(pg_settings: Settings) -> None:
    def status() -> dict[str, Any]:
        env = {"RODEOAI_VECTOR_STORE": "pgvector"}
        done = run_cli("index", "status", data_dir=pg_settings.data_dir, extra_env=env)
        return dict(json.loads(done.stdout))

    before = status()
    assert before["store"] == "pgvector" and before["state"] == "absent" and "fix" in before
    first_start = Components(pg_settings)
    first_start.index  # noqa: B018  (fills the table)
    first_start.close()
    after = status()
    assert after["state"] == "current" and after["vectors"] == after["chunks"] > 0


@postgres_only
def test_health_and_ready_name_the_vector_store(pg_settings: Settings) -> None:
    with TestClient(create_app(pg_settings)) as client:
        ready = client.get("/ready")
        health = client.get("/health").json()
    assert ready.status_code == 200, ready.text
    assert ready.json()["vector_store"] == "pgvector"
    assert health["index"]["store"] == "pgvector"
    assert health["index"]["vectors"] == health["chunks"] > 0 and health["status"] == "ok"
