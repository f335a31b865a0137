"""Prometheus metrics: one registry per app, served at GET /metrics (server/api/metrics.py).

Three ways in, none of which makes a domain import Prometheus:

- HTTP requests: `MetricsMiddleware`, the outermost layer, counts and times every request
  by route *template* (`/api/conversations/{conversation_id}`, never the raw path, so the
  label stays bounded; `unmatched` when no route matched), method and status. A streamed
  reply is timed to the end of its body. Scrapes of /metrics itself are left out.
- Domain events: plain callbacks on `Components.observers`, which the domains call: each
  answer record once stored (answers by backend, time to first token, tokens per second),
  each backend the failover chain skips, each ingestion's summary.
- Live state, read at scrape time by `LiveCollector`: the LLM queue, the index size, the
  documents and chunks stored. It reads only what is already loaded, so a scrape never
  waits for the index or a model to load; what is not loaded yet is left out.

With `rodeoai serve --workers N` each worker process has its own registry: a scrape gets
the numbers of whichever worker answered it (Prometheus multiprocess mode is not used).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server import __version__
from server.components import Components
from server.db import AnswerMetric, counts
from server.rag.ingest import IngestSummary

log = logging.getLogger(__name__)

METRICS_PATH = "/metrics"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
UNMATCHED = "unmatched"
# Methods a client invents would each make a series: anything else is `other`.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Requests run from milliseconds (health, search) to minutes (a streamed answer).
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
FIRST_TOKEN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60)
TOKENS_PER_SECOND_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000)
DOCUMENT_OUTCOMES = ("added", "updated", "unchanged", "removed", "skipped")
CHUNK_OUTCOMES = ("added", "removed")


class Metrics:
    """The app's registry and the series the app updates as things happen."""

    def __init__(self, components: Components) -> None:
        self.registry = registry = CollectorRegistry()
        self.requests = Counter(
            "rodeoai_http_requests",
            "HTTP requests answered, by route template, method and status code.",
            ["route", "method", "status"],
            registry=registry,
        )
        self.request_seconds = Histogram(
            "rodeoai_http_request_duration_seconds",
            "Time from a request's arrival to the end of its reply's body, by route template "
            "and method.",
            ["route", "method"],
            buckets=REQUEST_BUCKETS,
            registry=registry,
        )
        self.in_progress = Gauge(
            "rodeoai_http_requests_in_progress",
            "HTTP requests being answered now.",
            registry=registry,
        )
        self.answers = Counter(
            "rodeoai_answers",
            "Answers recorded, by the backend that answered, status (done, aborted: the "
            "client left, failed: the backend did) and API (chat, openai, ollama, ws).",
            ["backend", "status", "api"],
            registry=registry,
        )
        self.first_token_seconds = Histogram(
            "rodeoai_time_to_first_token_seconds",
            "Time from a question's arrival to its answer's first token, by backend.",
            ["backend"],
            buckets=FIRST_TOKEN_BUCKETS,
            registry=registry,
        )
        self.tokens_per_second = Histogram(
            "rodeoai_tokens_per_second",
            "Generation speed of finished answers (tokens after the first token's time), "
            "by backend.",
            ["backend"],
            buckets=TOKENS_PER_SECOND_BUCKETS,
            registry=registry,
        )
        self.generated_tokens = Counter(
            "rodeoai_generated_tokens",
            "Tokens streamed by the backends for recorded answers, by backend.",
            ["backend"],
            registry=registry,
        )
        self.failovers = Counter(
            "rodeoai_failovers",
            "Backends the failover chain skipped before one answered (or all failed), by "
            "backend and reason: excluded (not in the plan), cooling_down (failed "
            "recently), timeout (no first token in time), no_output or error.",
            ["backend", "reason"],
            registry=registry,
        )
        self.ingested_documents = Counter(
            "rodeoai_ingested_documents",
            "Documents seen by ingestion runs in this process, by outcome (skipped: "
            "unreadable or unsupported files).",
            ["outcome"],
            registry=registry,
        )
        self.ingested_chunks = Counter(
            "rodeoai_ingested_chunks",
            "Chunks added to or removed from the knowledge base by ingestion runs in this process.",
            ["outcome"],
            registry=registry,
        )
        for outcome in DOCUMENT_OUTCOMES:  # present from the start, at zero
            self.ingested_documents.labels(outcome)
        for outcome in CHUNK_OUTCOMES:
            self.ingested_chunks.labels(outcome)
        registry.register(LiveCollector(components))

    def attach(self, components: Components) -> None:
        """Listen to the domains. Called before anything is answered or ingested."""
        components.observers.answers.append(self.answer_recorded)
        components.observers.skips.append(self.backend_skipped)
        components.observers.ingests.append(self.ingested)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    # --- listeners ------------------------------------------------------------------------
    def request_done(self, route: str, method: str, status: int, seconds: float) -> None:
        method = method if method in METHODS else "other"
        self.requests.labels(route, method, str(status)).inc()
        self.request_seconds.labels(route, method).observe(seconds)

    def answer_recorded(self, record: AnswerMetric) -> None:
        backend = record.backend
        self.answers.labels(backend, record.status, record.api).inc()
        self.generated_tokens.labels(backend).inc(record.tokens_out)
        first = record.time_to_first_token_ms
        if first is None:
            return
        self.first_token_seconds.labels(backend).observe(first / 1000)
        generating = (record.latency_ms - first) / 1000
        if record.status == "done" and record.tokens_out > 0 and generating > 0:
            self.tokens_per_second.labels(backend).observe(record.tokens_out / generating)

    def backend_skipped(self, backend: str, reason: str) -> None:
        self.failovers.labels(backend, reason).inc()

    def ingested(self, summary: IngestSummary) -> None:
        documents = {
            "added": summary.added_documents,
            "updated": summary.updated_documents,
            "unchanged": summary.unchanged_documents,
            "removed": summary.removed_documents,
            "skipped": summary.skipped_files,
        }
        for outcome, count in documents.items():
            self.ingested_documents.labels(outcome).inc(count)
        self.ingested_chunks.labels("added").inc(summary.added_chunks)
        self.ingested_chunks.labels("removed").inc(summary.removed_chunks)


class LiveCollector(Collector):
    """Series read from the components at scrape time; never loads anything."""

    def __init__(self, components: Components) -> None:
        self.components = components

    def describe(self) -> Iterable[Metric]:
        return []  # so registering does not collect (the components are not started yet)

    def collect(self) -> Iterator[Metric]:
        components = self.components
        loaded = components.__dict__  # cached properties: present once built
        info = InfoMetricFamily("rodeoai_build", "The running RodeoAI version.")
        info.add_metric([], {"version": __version__})
        yield info
        yield GaugeMetricFamily(
            "rodeoai_ready",
            "1 once start-up (index, models) has finished and the server answers questions.",
            value=1 if components.startup.ready else 0,
        )
        if "chain" in loaded:
            yield from _queue_families(components)
        if "index" in loaded:
            index = components.index
            yield GaugeMetricFamily(
                "rodeoai_index_vectors",
                "Vectors in this process's FAISS index (one per chunk when current).",
                value=index.count,
            )
            yield GaugeMetricFamily(
                "rodeoai_index_generation",
                "The knowledge base generation this process's index reflects.",
                value=index.generation,
            )
        if "engine" in loaded:
            try:
                documents, chunks = counts(components.engine)
            except Exception:  # the database is away: the other series still go out
                log.warning("metrics: could not count documents", exc_info=True)
            else:
                yield GaugeMetricFamily(
                    "rodeoai_knowledge_documents", "Documents stored.", value=documents
                )
                yield GaugeMetricFamily("rodeoai_knowledge_chunks", "Chunks stored.", value=chunks)


def _queue_families(components: Components) -> Iterator[Metric]:
    waiting = GaugeMetricFamily(
        "rodeoai_llm_queue_depth",
        "Requests waiting for a free slot of an in-process model, by backend.",
        labels=["backend"],
    )
    busy = GaugeMetricFamily(
        "rodeoai_llm_slots_busy", "Slots generating now, by backend.", labels=["backend"]
    )
    slots = GaugeMetricFamily(
        "rodeoai_llm_slots",
        "Answers a backend decodes together at most, by backend.",
        labels=["backend"],
    )
    for backend in components.chain.backends:
        described = backend.describe()
        if "waiting" not in described:  # remote and extractive backends have no queue
            continue
        name = backend.name
        waiting.add_metric([name], _number(described["waiting"]))
        busy.add_metric([name], _number(described.get("busy", 0)))
        slots.add_metric([name], _number(described.get("slots", 0)))
    yield from (waiting, busy, slots)


def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float) else 0.0


# --- requests -----------------------------------------------------------------------------
def route_template(scope: Scope, probe: Scope) -> str:
    """The template of the route that answered. FastAPI puts its route in the scope; the
    other routes (mounts, Starlette's own) are matched again on `probe`, the scope as it
    arrived (a mount rewrites `root_path` on the way in)."""
    route = scope.get("route")
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    if isinstance(path, str):
        return path
    app = scope.get("app")
    routes: list[BaseRoute] = list(getattr(getattr(app, "router", None), "routes", []))
    partial = None
    for candidate in routes:
        try:
            match, _ = candidate.matches(probe)
        except Exception:  # an included router needs FastAPI's own state: not ours to match
            continue
        template = getattr(candidate, "path_format", None)
        if not isinstance(template, str):
            continue
        if match == Match.FULL:
            return template
        if match == Match.PARTIAL and partial is None:
            partial = template
    return partial or UNMATCHED


class MetricsMiddleware:
    """Counts and times each HTTP request; the outermost layer, so the guard's own replies
    (413, 500) are counted too."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == METRICS_PATH:
            await self.app(scope, receive, send)
            return
        probe: dict[str, Any] = {
            key: scope[key] for key in ("type", "path", "root_path", "method") if key in scope
        }
        status = 500  # unless a reply starts

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        started = time.perf_counter()
        self.metrics.in_progress.inc()
        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            self.metrics.in_progress.dec()
            self.metrics.request_done(
                route_template(scope, probe),
                scope["method"],
                status,
                time.perf_counter() - started,
            )
