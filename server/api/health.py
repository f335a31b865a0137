"""GET /health: liveness, and what the box answers with. GET /ready: readiness, for a
load balancer or an orchestrator: 200 only when every check holds, else 503 naming them."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text

from server import __version__
from server.api.deps import ComponentsDep
from server.components import Components
from server.db import counts, head_revision, schema_revision
from server.errors import AppError
from server.schemas import HealthOut, ReadyOut

router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthOut)
def health(components: ComponentsDep) -> HealthOut:
    """Answers at once, also while the server is still loading (status `loading`)."""
    documents, chunks = counts(components.engine)
    startup = components.startup
    if not startup.ready:  # the index and models may still be loading: do not touch them
        return HealthOut(
            status="loading" if not startup.done.is_set() else "degraded",
            startup={"state": startup.state, "detail": startup.detail},
            version=__version__,
            models={},
            documents=documents,
            chunks=chunks,
            index={"store": components.settings.vector_store},
        )
    index = components.index
    index.refresh_if_stale(components.engine)  # another worker or the CLI may have written
    embedder = components.embedder
    ready = chunks > 0 and index.count == chunks
    return HealthOut(
        status="ok" if ready else "degraded",
        version=__version__,
        models={
            "embedder": {"name": embedder.name, "dimension": embedder.dimension},
            "backends": components.chain.describe(),
        },
        documents=documents,
        chunks=chunks,
        index={"store": index.kind, "vectors": index.count, "generation": index.generation},
        startup={
            "state": startup.state,
            "detail": startup.detail,
            # Ready, with background work still taking CPU (answers wait a little longer).
            **({"background": "warming the fact cache"} if components.warming else {}),
        },
    )


@router.get(
    "/ready",
    response_model=ReadyOut,
    responses={503: {"description": "Not ready: `error.details` names each failed check"}},
)
def ready(components: ComponentsDep) -> ReadyOut:
    """200 once the database answers, its schema is current, the models are loaded and the
    index matches the database; otherwise 503 with Retry-After and what is not ready."""
    checks = readiness(components)
    failed = {name: why for name, why in checks.items() if why != "ok"}
    if failed:
        raise AppError(
            "not ready: " + "; ".join(f"{name} {why}" for name, why in failed.items()),
            code="not_ready",
            status=503,
            details=checks,
            headers={"Retry-After": "5"},
        )
    return ReadyOut(ready=True, checks=checks, vector_store=components.settings.vector_store)


def readiness(components: Components) -> dict[str, str]:
    """Each check's verdict: "ok", or why not. Later checks wait for earlier ones."""
    checks = {"database": "ok", "migrations": "ok", "models": "ok", "index": "ok"}
    try:
        with components.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        revision, head = schema_revision(components.engine), head_revision()
    except Exception as exc:  # any driver error means the same to a probe
        checks["database"] = f"unreachable ({type(exc).__name__})"
        return {**checks, "migrations": "unknown", "index": "unknown"}
    if revision != head:
        checks["migrations"] = f"at {revision or 'none'}, {head} expected"
    if not components.settings.rate_limit_storage.startswith("memory"):
        reachable = components.limiter.reachable()
        checks["rate_limits"] = "ok" if reachable else "store unreachable"
    if components.shutdown.draining:  # a balancer stops sending work before the port closes
        checks["models"] = "shutting down"
        return checks
    startup = components.startup
    if not startup.ready:
        checks["models"] = f"{startup.state} {startup.detail}".strip()
        checks["index"] = "waiting for start-up"
        return checks
    index = components.index
    index.refresh_if_stale(components.engine)
    _, chunks = counts(components.engine)
    if index.count != chunks:
        checks["index"] = f"{index.count} vectors for {chunks} chunks"
    return checks
