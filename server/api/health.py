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
    documents, chunks = counts(components.engine)
    index = components.index
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
    )
