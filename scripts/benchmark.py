"""Benchmarks that print figures (never assertions): ingestion, search and answer speed.

    python scripts/benchmark.py            # everything
    python scripts/benchmark.py --skip-100k  # leave out the slowest part

Each figure is shown next to the raw library doing the same work, so overhead is visible.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from server.chat.prompting import build_messages, fit_passages, select_facts
from server.components import Components
from server.config import Settings
from server.rag.chunking import chunk_sections
from server.rag.ingest import embedding_input
from server.rag.loaders import load_file

ROOT = Path(__file__).resolve().parent.parent
KNOWLEDGE = ROOT / "knowledge"
QUESTIONS = [
    "What rope length should a beginner header use?",
    "What is the penalty for breaking the barrier?",
    "How often should a horse see the farrier?",
    "How do I keep my thumb safe when dallying?",
    "What does a roping saddle cost?",
]
TOPIC_WORDS = (
    "rope loop header heeler steer calf barrel pole goat bronc bull horse saddle horn dally "
    "swing delivery timing barrier penalty score arena jackpot classification rating stride "
    "tip spoke honda lay soft stiff medium feet seconds practice drill sled dummy cattle"
).split()
# Text follows a Zipf curve over 5,000 words, as prose does, with the rodeo words most common.
VOCABULARY = TOPIC_WORDS + [f"w{i}" for i in range(5000 - len(TOPIC_WORDS))]
ZIPF = [1 / (rank + 1) for rank in range(len(VOCABULARY))]


def settings(data: Path) -> Settings:
    return Settings(
        _env_file=None,
        data_dir=data,
        knowledge_dir=KNOWLEDGE,  # type: ignore[call-arg]
        autoload_knowledge=False,
        log_level="WARNING",
    )


def percentile(values: list[float], pct: float) -> float:
    return float(np.percentile(np.asarray(values), pct))


def bench_ingestion(components: Components) -> None:
    embedder = components.embedder
    started = time.perf_counter()
    summary = components.ingestor.ingest([KNOWLEDGE])
    ours = time.perf_counter() - started
    chunks = summary.added_chunks

    texts: list[str] = []
    for path in sorted(KNOWLEDGE.glob("*.md")):
        loaded = load_file(path, path.read_bytes())
        drafts = chunk_sections(
            loaded.sections,
            count_tokens=embedder.count_tokens,
            max_tokens=components.settings.chunk_tokens,
            overlap=components.settings.chunk_overlap,
        )
        texts.extend(embedding_input(loaded.title, d) for d in drafts)
    started = time.perf_counter()
    embedder._model.encode(texts, batch_size=32, normalize_embeddings=True)
    raw = time.perf_counter() - started
    print(f"== ingestion (starter knowledge, {summary.added_documents} documents, {chunks} chunks)")
    print(f"  rodeoai ingest            {chunks / ours:8.1f} chunks/s  ({ours:.2f} s)")
    print(f"  raw SentenceTransformer   {len(texts) / raw:8.1f} chunks/s  ({raw:.2f} s)")
    print(f"  ratio (ours / raw)        {(chunks / ours) / (len(texts) / raw):8.2f}")


def fill_synthetic(components: Components, total: int) -> None:
    """Insert random chunks straight into SQLite (FTS rows via the triggers), then rebuild."""
    rng = np.random.default_rng(7)
    words = random.Random(7)
    db = sqlite3.connect(components.settings.database_path)
    db.execute("PRAGMA synchronous=OFF")
    per_doc = 100
    with db:
        for d in range(total // per_doc):
            cur = db.execute(
                "INSERT INTO document (source, title, kind, content_hash, events_json, "
                "chunk_count, created_at, updated_at) VALUES (?, ?, 'md', ?, '[]', ?, "
                "datetime('now'), datetime('now'))",
                (f"synthetic/{d}.md", f"Synthetic {d}", f"h{d}", per_doc),
            )
            vectors = rng.standard_normal((per_doc, components.embedder.dimension)).astype("f4")
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            db.executemany(
                "INSERT INTO chunk (document_id, ordinal, text, token_count, content_hash, "
                "embedding) VALUES (?, ?, ?, 50, ?, ?)",
                [
                    (
                        cur.lastrowid,
                        i,
                        " ".join(words.choices(VOCABULARY, ZIPF, k=60)),
                        f"{d}-{i}",
                        vectors[i].tobytes(),
                    )
                    for i in range(per_doc)
                ],
            )
        db.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('generation', ?)", (str(total),)
        )
    db.close()
    components.index.rebuild(components.engine)


def bench_search(size: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        components = Components(settings(Path(tmp)))
        components.index  # noqa: B018
        started = time.perf_counter()
        fill_synthetic(components, size)
        built = time.perf_counter() - started
        retriever = components.retriever
        queries = [" ".join(random.Random(i).choices(VOCABULARY, ZIPF, k=6)) for i in range(200)]
        retriever.search(queries[0], 5)  # warm-up
        timings = {"hybrid": [], "dense": [], "lexical": []}
        for query in queries:
            for mode, call in (
                ("hybrid", retriever.search),
                ("dense", retriever.dense),
                ("lexical", retriever.lexical),
            ):
                started = time.perf_counter()
                call(query, 5)
                timings[mode].append((time.perf_counter() - started) * 1000)
        print(
            f"== search at {size:,} synthetic chunks (fill + index build {built:.1f} s, "
            f"{len(queries)} queries)"
        )
        for mode, values in timings.items():
            print(
                f"  {mode:8s} p50 {percentile(values, 50):7.2f} ms   "
                f"p99 {percentile(values, 99):7.2f} ms"
            )


def bench_answers(components: Components) -> None:
    from llama_cpp import Llama

    chat = components.chat
    asyncio.run(chat.answer([{"role": "user", "content": "warm up"}]))
    ours_latency, ours_rate = [], []
    for question in QUESTIONS:
        answer = asyncio.run(
            chat.answer([{"role": "user", "content": question}], skill_level="beginner")
        )
        ours_latency.append(answer.latency_ms)
        ours_rate.append(answer.tokens_out / max(answer.generation_ms / 1000, 1e-6))

    backend = components.llamacpp()
    llm = Llama(
        model_path=str(backend.model_path),
        n_ctx=components.settings.llm_context,
        n_threads=backend.threads,
        verbose=False,
    )
    raw_latency, raw_rate = [], []
    for question in QUESTIONS:
        hits = components.retriever.search(question, components.settings.top_k)
        passages = fit_passages(hits, components.embedder, components.settings.context_token_budget)
        facts = select_facts(
            question, passages, components.embedder, components.settings.facts_in_prompt
        )
        messages = build_messages(question, facts, "beginner", [])
        started = time.perf_counter()
        out = llm.create_chat_completion(
            messages=messages,
            max_tokens=components.settings.llm_max_tokens,
            temperature=components.settings.llm_temperature,
            repeat_penalty=components.settings.llm_repeat_penalty,
        )
        elapsed = time.perf_counter() - started
        raw_latency.append(elapsed * 1000)
        raw_rate.append(out["usage"]["completion_tokens"] / elapsed)
    print(f"== answers ({len(QUESTIONS)} questions, bundled SmolLM2-135M, same prompts)")
    print(
        f"  rodeoai answer (end to end)  p50 {statistics.median(ours_latency):7.0f} ms   "
        f"{statistics.median(ours_rate):6.1f} tokens/s while generating"
    )
    print(
        f"  raw llama-cpp-python call    p50 {statistics.median(raw_latency):7.0f} ms   "
        f"{statistics.median(raw_rate):6.1f} tokens/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--skip-100k", action="store_true", help="Leave out 100,000 chunks")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        components = Components(settings(Path(tmp)))
        components.index  # noqa: B018
        bench_ingestion(components)
        bench_answers(components)
    for size in (10_000,) if args.skip_100k else (10_000, 100_000):
        bench_search(size)


if __name__ == "__main__":
    main()
