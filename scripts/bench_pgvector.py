"""pgvector beside FAISS on the same synthetic chunks (bench_search.py makes them), on a real
PostgreSQL with pgvector from PyPI pgserver: recall@10 against an exact search and p50 query
time of each, the time an existing database takes to switch (copying the stored embeddings
into the vector table, then building the HNSW index), and where the memory goes.

    python scripts/bench_pgvector.py [--size 100000]
    make bench BENCH_ARGS=--pgvector        # the same, from the benchmark's front door
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
from bench_report import Goal, machine, p50, print_goals
from bench_search import PER_DOCUMENT, base_embeddings, questions, settings, synthetic_vectors

from server.components import Components
from server.config import Settings
from server.rag.pgvector_schema import HNSW_INDEX

TOPICS = "rope loop header heeler steer calf barrel pole arena horse saddle".split()


def fill(url: str, base: np.ndarray, total: int) -> np.ndarray:
    """`total` chunks (with their stored embeddings) written by COPY, ids 1..total in order;
    the lexical trigger is off meanwhile (the dense search is measured here)."""
    import psycopg

    stored: list[np.ndarray] = []
    documents = total // PER_DOCUMENT
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://", 1)) as conn:
        conn.execute("ALTER TABLE chunk DISABLE TRIGGER chunk_tsv_insert")
        with conn.cursor().copy(
            "COPY document (id, source, title, kind, content_hash, events_json, chunk_count, "
            "created_at, updated_at) FROM STDIN"
        ) as copy:
            for d in range(documents):
                row = (d + 1, f"synthetic/{d}.md", f"Synthetic {d}", "md", f"h{d}", "[]")
                copy.write_row((*row, PER_DOCUMENT, "2026-01-01", "2026-01-01"))
        with conn.cursor().copy(
            "COPY chunk (id, document_id, ordinal, text, token_count, content_hash, embedding) "
            "FROM STDIN"
        ) as copy:
            for d in range(documents):
                vectors = synthetic_vectors(base, PER_DOCUMENT, seed=d)
                stored.append(vectors)
                for i in range(PER_DOCUMENT):
                    text = " ".join(TOPICS[(d + i + j) % len(TOPICS)] for j in range(12))
                    chunk_id = d * PER_DOCUMENT + i + 1
                    copy.write_row((chunk_id, d + 1, i, text, 50, f"{d}-{i}", vectors[i].tobytes()))
        conn.execute("ALTER TABLE chunk ENABLE TRIGGER chunk_tsv_insert")
        conn.execute("SELECT setval('document_id_seq', %s)", (documents,))
        conn.execute("SELECT setval('chunk_id_seq', %s)", (total,))
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('generation', %s) "
            "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            (str(total),),
        )
    return np.concatenate(stored)


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def measure(search, query_vectors: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:  # type: ignore[no-untyped-def]
    """recall@10 against `truth` (0-based positions; chunk ids are 1-based), and p50 ms of a
    top-10 and of a top-40 query (the retriever's candidate pool)."""
    search(query_vectors[0], 40)  # warm-up
    found, at_10, at_40 = 0, [], []
    for row, vector in enumerate(query_vectors):
        started = time.perf_counter()
        hits = search(vector, 10)
        at_10.append((time.perf_counter() - started) * 1000)
        found += len({i for i, _ in hits} & {int(i) + 1 for i in truth[row]})
        started = time.perf_counter()
        search(vector, 40)
        at_40.append((time.perf_counter() - started) * 1000)
    return found / (10 * len(query_vectors)), p50(at_10), p50(at_40)


def bench_pgvector(size: int, base: np.ndarray, queries: list[str]) -> list[Goal]:
    import pgserver

    goals: list[Goal] = []
    with tempfile.TemporaryDirectory() as tmp:
        server = pgserver.get_server(Path(tmp) / "pg", cleanup_mode="stop")
        server.psql("CREATE DATABASE bench;")
        url = server.get_uri("bench").replace("postgresql://", "postgresql+psycopg://", 1)
        faiss_side = Components(
            settings(Path(tmp) / "faiss", database_url=url, vector_store="faiss")
        )
        faiss_side.index  # noqa: B018  (the schema, and an empty index)
        started = time.perf_counter()
        vectors = fill(url, base, size)
        filled = time.perf_counter() - started
        started = time.perf_counter()
        faiss_side.index.rebuild(faiss_side.engine)
        faiss_built = time.perf_counter() - started

        handler = Lines()
        logging.getLogger("server.rag").addHandler(handler)
        logging.getLogger("server.rag").setLevel(logging.INFO)
        pg_side = Components(
            settings(Path(tmp) / "pg-data", database_url=url, vector_store="pgvector")
        )
        started = time.perf_counter()
        outcome = pg_side.unopened_index.open(pg_side.engine)
        switched = time.perf_counter() - started
        logging.getLogger("server.rag").removeHandler(handler)
        build = next((line for line in handler.lines if "HNSW index built" in line), "?")
        with pg_side.engine.connect() as conn:
            from sqlalchemy import text

            index_mb = conn.execute(
                text("SELECT pg_relation_size(:i) / 1048576.0"), {"i": HNSW_INDEX}
            ).scalar_one()
        print(
            f"== pgvector at {size:,} chunks: fill {filled:.0f} s; FAISS "
            f"{'IVF' if faiss_side.index.approximate else 'flat'} built in {faiss_built:.1f} s; "
            f"switch to pgvector {switched:.1f} s ({outcome}; {build.removeprefix('pgvector: ')}),"
            f" HNSW index {index_mb:.0f} MB in PostgreSQL"
        )
        query_vectors = faiss_side.embedder.encode(queries)
        exact = faiss.IndexFlatIP(vectors.shape[1])
        exact.add(vectors)
        _, truth = exact.search(query_vectors, 10)
        ours = measure(pg_side.unopened_index.search, query_vectors, truth)
        theirs = measure(faiss_side.index.search, query_vectors, truth)
        flat = measure(lambda v, k: _flat(exact, v, k), query_vectors, truth)
        store = pg_side.unopened_index
        kind = f"HNSW, ef_search {store.ef_search}" if store.approximate else "exact scan"  # type: ignore[attr-defined]
        print(
            f"  pgvector ({kind}): recall@10 "
            f"{ours[0]:.3f}, p50 {ours[1]:.1f} ms (top 10), {ours[2]:.1f} ms (top 40); "
            f"FAISS {'IVF' if faiss_side.index.approximate else 'flat'}: recall@10 "
            f"{theirs[0]:.3f}, p50 {theirs[1]:.1f} ms, {theirs[2]:.1f} ms; exact FAISS p50 "
            f"{flat[1]:.1f} ms, {flat[2]:.1f} ms"
        )
        goals.append(
            Goal(
                f"pgvector: recall@10 vs exact at {size:,}",
                f"{ours[0]:.3f}",
                f"FAISS {theirs[0]:.3f}",
                ours[0] / theirs[0] if theirs[0] else None,
                ">= 0.95",
                ours[0] >= 0.95,
            )
        )
        goals.append(
            Goal(
                f"pgvector: p50 top-40 query at {size:,}",
                f"{ours[2]:.1f} ms",
                f"FAISS {theirs[2]:.1f} ms",
                ours[2] / theirs[2],
                "reported: one shared index instead of one per worker",
                None,
            )
        )
        faiss_side.close()
        pg_side.close()
        server.cleanup()
    return goals


def _flat(index, vector: np.ndarray, k: int) -> list[tuple[int, float]]:  # type: ignore[no-untyped-def]
    scores, ids = index.search(vector.reshape(1, -1), k)
    return [(int(i) + 1, float(s)) for i, s in zip(ids[0], scores[0], strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=100_000, help="synthetic chunks")
    args = parser.parse_args()
    print(f"RodeoAI pgvector benchmark on {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        components = Components(
            Settings(_env_file=None, data_dir=Path(tmp), autoload_knowledge=False)  # type: ignore[call-arg]
        )
        base = base_embeddings(components, 400)
        components.close()
    print_goals(bench_pgvector(args.size, base, questions()))


if __name__ == "__main__":
    main()
