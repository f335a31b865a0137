"""GET /health: is the box able to answer, and with what."""

from __future__ import annotations

from fastapi import APIRouter

from server import __version__
from server.api.deps import ComponentsDep
from server.db import counts
from server.schemas import HealthOut

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
            index={},
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
        index={"vectors": index.count, "generation": index.generation},
        startup={"state": startup.state, "detail": startup.detail},
    )
