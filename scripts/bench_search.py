"""Search at scale, on SQLite: hybrid search through RodeoAI's retriever at 100,000 and
1,000,000 synthetic chunks, beside its raw parts in the same run (the query embedding, an exact
FAISS search, a bm25s query) and beside Chroma; the approximate index's recall@10 against
exact search; and start-up time and resident memory of `rodeoai serve` at each size.

Synthetic chunks, so that sizes no real corpus here reaches can be measured:
- vectors are mixtures of real sentence embeddings from the starter knowledge plus noise, so
  they cluster as real embeddings do (random vectors would make any approximate index look
  useless, and real ones do not behave like that);
- text follows a Zipf curve over 5,000 words with the rodeo words most common, as prose does;
- queries are the project's real test questions (tests/data/questions).
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from bench_report import Goal, p50

from server.components import Components
from server.config import Settings
from server.rag.bm25 import WARM_MAX_CHUNKS

ROOT = Path(__file__).resolve().parent.parent
TOPIC_WORDS = (
    "rope loop header heeler steer calf barrel pole goat bronc bull horse saddle horn dally "
    "swing delivery timing barrier penalty score arena jackpot classification rating stride "
    "tip spoke honda lay soft stiff medium feet seconds practice drill sled dummy cattle"
).split()
VOCABULARY = TOPIC_WORDS + [f"w{i}" for i in range(5000 - len(TOPIC_WORDS))]
CUMULATIVE = list(np.cumsum([1 / (rank + 1) for rank in range(len(VOCABULARY))]))
PER_DOCUMENT = 100


def questions() -> list[str]:
    return [
        json.loads(line)["question"]
        for path in sorted((ROOT / "tests" / "data" / "questions").glob("*.jsonl"))
        for line in path.read_text().splitlines()
        if line.strip()
    ]


def settings(data: Path, **overrides: Any) -> Settings:
    return Settings(
        _env_file=None,
        data_dir=data,
        knowledge_dir=ROOT / "knowledge",  # type: ignore[call-arg]
        autoload_knowledge=False,
        log_level="WARNING",
        **overrides,
    )


def base_embeddings(components: Components, limit: int) -> np.ndarray:
    """Real sentence embeddings from the starter knowledge: the synthetic vectors' seeds."""
    sentences: list[str] = []
    for path in sorted((ROOT / "knowledge").glob("*.md")):
        sentences += [s for s in re.split(r"(?<=[.!?])\s+", path.read_text()) if len(s) > 30]
    return components.embedder.encode(sentences[:limit])


def synthetic_vectors(base: np.ndarray, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    first = base[rng.integers(len(base), size=n)]
    second = base[rng.integers(len(base), size=n)]
    noise = rng.standard_normal(first.shape).astype(np.float32) * (0.35 / np.sqrt(base.shape[1]))
    vectors = first + 0.5 * second + noise
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32)


def fill(components: Components, base: np.ndarray, total: int, *, fts: bool) -> np.ndarray:
    """Insert `total` chunks straight into SQLite; returns their vectors, in id order. With
    fts False the FTS5 trigger is dropped first (at a million chunks it would take minutes,
    and the in-memory index does not use it)."""
    words = random.Random(7)
    db = sqlite3.connect(components.settings.database_path)
    db.execute("PRAGMA synchronous=OFF")
    if not fts:
        db.execute("DROP TRIGGER IF EXISTS chunk_fts_insert")
    stored: list[np.ndarray] = []
    with db:
        for d in range(total // PER_DOCUMENT):
            cur = db.execute(
                "INSERT INTO document (source, title, kind, content_hash, events_json, "
                "chunk_count, created_at, updated_at) VALUES (?, ?, 'md', ?, '[]', ?, "
                "datetime('now'), datetime('now'))",
                (f"synthetic/{d}.md", f"Synthetic {d}", f"h{d}", PER_DOCUMENT),
            )
            vectors = synthetic_vectors(base, PER_DOCUMENT, seed=d)
            stored.append(vectors)
            db.executemany(
                "INSERT INTO chunk (document_id, ordinal, text, token_count, content_hash, "
                "embedding) VALUES (?, ?, ?, 50, ?, ?)",
                [
                    (
                        cur.lastrowid,
                        i,
                        " ".join(words.choices(VOCABULARY, cum_weights=CUMULATIVE, k=60)),
                        f"{d}-{i}",
                        vectors[i].tobytes(),
                    )
                    for i in range(PER_DOCUMENT)
                ],
            )
        db.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('generation', ?)", (str(total),)
        )
    db.close()
    return np.concatenate(stored)


def timed(call, *args) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    call(*args)
    return (time.perf_counter() - started) * 1000


def chunk_texts(components: Components) -> list[str]:
    with sqlite3.connect(components.settings.database_path) as db:
        return [row[0] for row in db.execute("SELECT text FROM chunk ORDER BY id")]


def raw_bm25(texts: list[str]):  # type: ignore[no-untyped-def]
    """bm25s over the same chunk texts: the raw BM25 peer. None when it is not installed."""
    try:
        import bm25s
    except ImportError:
        return None
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)
    return lambda query: retriever.retrieve(
        bm25s.tokenize([query], stopwords="en", show_progress=False), k=40, show_progress=False
    )


def chroma_p50(vectors: np.ndarray, texts: list[str], query_vectors: np.ndarray) -> float | None:
    """Chroma (Open WebUI's default store) on the same vectors and texts: p50 of a top-5
    query that returns the passages, as ours does."""
    try:
        import chromadb
        from chromadb.config import Settings as ChromaSettings
    except ImportError:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        client = chromadb.PersistentClient(tmp, ChromaSettings(anonymized_telemetry=False))
        collection = client.create_collection("bench", metadata={"hnsw:space": "ip"})
        step = 5000
        for start in range(0, len(vectors), step):
            part = vectors[start : start + step]
            collection.add(
                ids=[str(i) for i in range(start, start + len(part))],
                embeddings=part.tolist(),
                documents=texts[start : start + len(part)],
            )
        collection.query(query_embeddings=[query_vectors[0].tolist()], n_results=5)
        times = [
            timed(lambda v: collection.query(query_embeddings=[v.tolist()], n_results=5), vector)
            for vector in query_vectors
        ]
    return p50(times)


def recall_at_10(components: Components, vectors: np.ndarray, query_vectors: np.ndarray) -> float:
    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(vectors)
    _, truth = exact.search(query_vectors, 10)
    found = 0
    for row, vector in enumerate(query_vectors):
        ours = {i for i, _ in components.index.search(vector, 10)}
        # Chunk ids are 1..n in fill order; FAISS flat positions are 0..n-1.
        found += len(ours & {int(i) + 1 for i in truth[row]})
    return found / (10 * len(query_vectors))


def serve_ready(data: Path, chunks: int) -> tuple[float, float]:
    """Seconds from `rodeoai serve` to a 200 from /ready, and its resident memory (MB) once the
    background lexical index is built too."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **os.environ,
        "RODEOAI_DATA_DIR": str(data),
        "RODEOAI_PORT": str(port),
        "RODEOAI_AUTOLOAD_KNOWLEDGE": "false",
        "RODEOAI_LOG_LEVEL": "INFO",
    }
    log = data / "serve.log"
    started = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("rodeoai")), "serve"],
            env=env,
            stdout=out,
            stderr=out,
        )
    try:
        ready = None
        while time.perf_counter() - started < 600:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2):
                    ready = time.perf_counter() - started
                    break
            except OSError:
                time.sleep(0.1)
        if ready is None:
            raise RuntimeError(f"not ready after 600 s; see {log}")
        deadline = time.time() + 600
        background = chunks > WARM_MAX_CHUNKS  # smaller ones are built before ready
        while background and "lexical index rebuilt" not in log.read_text():
            if time.time() > deadline:
                raise RuntimeError(f"no lexical index after 600 s; see {log}")
            time.sleep(0.5)
        status = Path(f"/proc/{proc.pid}/status").read_text()
        rss = int(next(x for x in status.splitlines() if x.startswith("VmRSS")).split()[1]) / 1024
        return ready, rss
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def bench_size(
    size: int, base: np.ndarray, queries: list[str], *, chroma: bool, empty_ready: float
) -> list[Goal]:
    goals: list[Goal] = []
    with tempfile.TemporaryDirectory() as tmp:
        components = Components(settings(Path(tmp)))
        components.index  # noqa: B018  (creates the schema and an empty index)
        started = time.perf_counter()
        vectors = fill(components, base, size, fts=size <= 100_000)
        filled = time.perf_counter() - started
        started = time.perf_counter()
        components.index.rebuild(components.engine)
        indexed = time.perf_counter() - started
        retriever = components.retriever
        assert retriever.bm25 is not None
        started = time.perf_counter()
        snapshot = retriever.bm25.warm()
        lexical_built = time.perf_counter() - started
        kind = "IVF" if components.index.approximate else "flat"
        print(
            f"== search at {size:,} chunks: fill {filled:.0f} s, {kind} index {indexed:.1f} s, "
            f"BM25 {lexical_built:.1f} s ({snapshot.nbytes / 2**20:.0f} MB)"
        )
        model = components.embedder._model
        query_vectors = components.embedder.encode(queries)
        exact = faiss.IndexFlatIP(vectors.shape[1])
        exact.add(vectors)
        texts = chunk_texts(components)
        bm25s_query = raw_bm25(texts)
        retriever.search(queries[0], 5)  # warm-up
        times: dict[str, list[float]] = {
            "ours": [],
            "dense": [],
            "embed": [],
            "exact": [],
            "bm25s": [],
        }
        for question, vector in zip(queries, query_vectors, strict=True):
            times["ours"].append(timed(retriever.search, question, 5))
            # Chroma's work exactly: embed, search the vectors, return the passages. A new
            # string, so the query vector is not taken from the fact cache.
            times["dense"].append(timed(retriever.search, f"{question}?", 5, "dense"))
            times["embed"].append(
                timed(lambda q: model.encode([q], normalize_embeddings=True), question)
            )
            times["exact"].append(timed(exact.search, vector.reshape(1, -1), 40))
            if bm25s_query is not None:
                times["bm25s"].append(timed(bm25s_query, question))
        parts = {name: p50(values) for name, values in times.items() if values}
        raw = parts["embed"] + parts["exact"] + parts.get("bm25s", 0.0)
        limit = 30.0 if size <= 100_000 else 60.0
        print(
            "  p50 ms: ours {ours:.1f}; raw parts: embed {embed:.1f} + exact FAISS {exact:.1f}"
            " + bm25s {bm25s:.1f}".format(**{"bm25s": float("nan"), **parts})
        )
        goals.append(
            Goal(
                f"search: hybrid p50 at {size:,} chunks",
                f"{parts['ours']:.1f} ms",
                f"{raw:.1f} ms",
                parts["ours"] / raw,
                f"<= 1.5x the raw parts and < {limit:.0f} ms",
                parts["ours"] <= 1.5 * raw and parts["ours"] < limit,
            )
        )
        if components.index.approximate:
            recall = recall_at_10(components, vectors, query_vectors)
            goals.append(
                Goal(
                    f"search: IVF recall@10 vs exact at {size:,}",
                    f"{recall:.3f}",
                    "1.000",
                    recall,
                    ">= 0.95",
                    recall >= 0.95,
                )
            )
        if chroma:
            theirs = chroma_p50(vectors, texts, query_vectors)
            if theirs is not None:
                theirs += parts["embed"]  # Chroma is given vectors: add the same embedding
                goals.append(
                    Goal(
                        f"search: faster than Chroma at {size:,}",
                        f"{parts['ours']:.1f} ms",
                        f"{theirs:.1f} ms",
                        parts["ours"] / theirs,
                        "ours < Chroma (embed + query)",
                        parts["ours"] < theirs,
                    )
                )
                goals.append(
                    Goal(
                        f"search: dense only beside Chroma at {size:,}",
                        f"{parts['dense']:.1f} ms",
                        f"{theirs:.1f} ms",
                        parts["dense"] / theirs,
                        "reported: the same work as Chroma's (no lexical search, no fusion)",
                        None,
                    )
                )
        components.close()
        ready, rss = serve_ready(Path(tmp), size)
        goals.append(
            Goal(
                f"start-up: /ready and memory at {size:,}",
                f"{ready:.1f} s, {rss:.0f} MB",
                f"{empty_ready:.1f} s empty",
                ready / empty_ready,
                "reported: raw is the same server with no knowledge",
                None,
            )
        )
        if size == 100_000:
            goals.append(
                Goal(
                    "start-up: what 100,000 chunks add to /ready",
                    f"{ready - empty_ready:.1f} s",
                    f"{empty_ready:.1f} s empty",
                    None,
                    "< 5 s (models load either way)",
                    ready - empty_ready < 5,
                )
            )
    return goals


def empty_ready() -> float:
    """Seconds to /ready for a box with no knowledge: the models' share of any start-up."""
    with tempfile.TemporaryDirectory() as tmp:
        components = Components(settings(Path(tmp)))
        components.index  # noqa: B018  (creates the schema)
        components.close()
        return serve_ready(Path(tmp), 0)[0]
