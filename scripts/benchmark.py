"""Benchmarks that print figures (never assertions): ingestion, search and answer speed.

    make bench                      # everything: about 25 minutes on 2 cores
    make bench BENCH_ARGS=--quick   # 10,000 chunks, one streaming round: about 2 minutes
    make bench BENCH_ARGS=--pgvector  # only pgvector beside FAISS at 100,000 chunks

Each figure is shown next to the raw library (or the peer named) doing the same work in the
same run, and every goal of the performance issue ends as one line: figure, raw figure,
ratio, pass or miss.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_pgvector import bench_pgvector
from bench_report import Goal, machine, print_goals
from bench_search import base_embeddings, bench_size, empty_ready, questions
from bench_streaming import bench_streaming

from server.chat.prompting import build_messages, fit_passages, select_facts
from server.components import Components
from server.config import Settings
from server.rag.chunking import chunk_sections
from server.rag.embedder import FORWARD_BATCH
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


def bench_ingestion(components: Components, rounds: int) -> Goal:
    """The starter knowledge ingested into `components`, and into fresh databases for the
    further rounds, beside the raw encode of the same texts as often; the best of each."""
    embedder = components.embedder
    # Both sides start with a loaded, warmed model: the raw encode below runs after ours,
    # and torch's first call in a process costs extra that a real ingestion pays once.
    embedder.encode(["warm up", "the encoder"])
    started = time.perf_counter()
    summary = components.ingestor.ingest([KNOWLEDGE])
    ours = time.perf_counter() - started
    chunks = summary.added_chunks
    for _ in range(rounds - 1):
        with tempfile.TemporaryDirectory() as tmp:
            again = Components(settings(Path(tmp)))
            started = time.perf_counter()
            again.ingestor.ingest([KNOWLEDGE])
            ours = min(ours, time.perf_counter() - started)
            again.close()

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
    raw = at_ours = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        embedder._model.encode(texts, batch_size=32, normalize_embeddings=True)  # its default
        raw = min(raw, time.perf_counter() - started)
        started = time.perf_counter()
        embedder._model.encode(texts, batch_size=FORWARD_BATCH, normalize_embeddings=True)
        at_ours = min(at_ours, time.perf_counter() - started)
    print(f"== ingestion (starter knowledge, {summary.added_documents} documents, {chunks} chunks)")
    print(f"  rodeoai ingest            {chunks / ours:8.1f} chunks/s  ({ours:.2f} s)")
    print(f"  raw SentenceTransformer   {len(texts) / raw:8.1f} chunks/s  ({raw:.2f} s)")
    print(
        f"  raw, in batches of {FORWARD_BATCH:<2d}    {len(texts) / at_ours:8.1f} chunks/s  "
        f"({at_ours:.2f} s; ours encodes in these)"
    )
    ratio = (chunks / ours) / (len(texts) / raw)
    print(f"  ratio (ours / raw)        {ratio:8.2f}")
    return Goal(
        "ingestion: chunks/s",
        f"{chunks / ours:.1f} chunks/s",
        f"{len(texts) / raw:.1f} chunks/s",
        ratio,
        ">= 0.95x raw encode at its default batch of 32",
        ratio >= 0.95,
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
    parser.add_argument(
        "--quick", action="store_true", help="10,000 chunks and one round: about 2 minutes"
    )
    parser.add_argument(
        "--pgvector",
        action="store_true",
        help="only pgvector beside FAISS at 100,000 chunks (a full run includes it)",
    )
    args = parser.parse_args()
    print(f"RodeoAI benchmark on {machine()}")
    goals: list[Goal] = []
    if args.pgvector:
        with tempfile.TemporaryDirectory() as tmp:
            components = Components(settings(Path(tmp)))
            base = base_embeddings(components, 400)
            components.close()
        print_goals(bench_pgvector(100_000, base, questions()))
        return
    # The folder the ingestion goal fills is the streaming server's knowledge later.
    with tempfile.TemporaryDirectory() as knowledge:
        components = Components(settings(Path(knowledge)))
        components.index  # noqa: B018
        goals.append(bench_ingestion(components, 1 if args.quick else 3))
        if not args.quick:
            bench_answers(components)
        base = base_embeddings(components, 400)
        components.close()
        sizes = (10_000,) if args.quick else (10_000, 100_000, 1_000_000)
        empty = empty_ready()
        for size in sizes:
            goals += bench_size(size, base, questions(), chroma=size == 100_000, empty_ready=empty)
            if size == 100_000:
                goals += bench_pgvector(size, base, questions())
        retrieval = next(
            (float(g.figure.split()[0]) for g in goals if g.name.startswith("search: hybrid")),
            0.0,
        )
        goals += bench_streaming(1 if args.quick else 2, retrieval, Path(knowledge))
    print_goals(goals)


if __name__ == "__main__":
    main()
