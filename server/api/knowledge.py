"""Administration of the knowledge base: list, upload (with ingestion progress), remove,
and rebuild the vector index."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, File, Query, UploadFile
from sse_starlette.sse import EventSourceResponse

from server.api.deps import AdminUser, ComponentsDep
from server.schemas import ErrorOut

UPLOAD_PATH = "/api/admin/documents"
router = APIRouter(
    prefix="/api/admin",
    tags=["admin"],
    responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut}},
)


@router.get("/documents")
def list_documents(_admin: AdminUser, components: ComponentsDep) -> list[dict[str, Any]]:
    """Every ingested document with its chunk count, by source."""
    return components.ingestor.documents()


@router.delete("/documents", responses={404: {"model": ErrorOut}})
async def remove_document(
    _admin: AdminUser,
    components: ComponentsDep,
    source: Annotated[str, Query(min_length=1, max_length=1000)],
) -> dict[str, int]:
    """Remove a document and its chunks from the index."""
    removed = await asyncio.to_thread(components.ingestor.remove, source)
    return {"removed_chunks": removed}


@router.post("/index/rebuild")
async def rebuild_index(_admin: AdminUser, components: ComponentsDep) -> dict[str, Any]:
    """Rebuild the FAISS index from the embeddings stored in the database (nothing is
    re-encoded). Searches keep working meanwhile; the new index replaces the old at once."""
    index = components.index

    def rebuild() -> float:
        started = time.monotonic()
        index.check_embedder(components.engine)
        index.rebuild(components.engine)
        return time.monotonic() - started

    seconds = await asyncio.to_thread(rebuild)
    return {"vectors": index.count, "generation": index.generation, "seconds": round(seconds, 2)}


@router.post(
    "/documents",
    responses={
        413: {"model": ErrorOut},
        422: {"model": ErrorOut, "description": "Unsupported, empty or unnamed file"},
        200: {
            "content": {"text/event-stream": {}},
            "description": "Events: `saved` (the source name), `progress` ({done, total} "
            "chunks, repeated), then `done` with the ingestion summary.",
        },
    },
)
async def upload_document(
    _admin: AdminUser, components: ComponentsDep, file: Annotated[UploadFile, File()]
) -> EventSourceResponse:
    """Add or update one document (md, txt, pdf, html, vtt, srt, jsonl). Ingestion runs on
    even if the client goes away; uploading a file of the same name again updates it."""
    ingestor = components.ingestor
    data = await file.read(components.settings.max_file_bytes + 1)
    path = await asyncio.to_thread(ingestor.save_upload, file.filename or "", data)
    loop = asyncio.get_running_loop()
    updates: asyncio.Queue[tuple[int, int]] = asyncio.Queue()

    def progress(_path: Any, done: int, total: int) -> None:
        loop.call_soon_threadsafe(updates.put_nowait, (done, total))

    job = loop.run_in_executor(
        None, lambda: ingestor.ingest([path], prune=False, chunk_progress=progress)
    )

    async def events() -> AsyncIterator[dict[str, str]]:
        yield {"event": "saved", "data": json.dumps({"source": ingestor.source_name(path)})}
        while not (job.done() and updates.empty()):
            try:
                done, total = await asyncio.wait_for(updates.get(), timeout=0.5)
            except TimeoutError:
                continue
            yield {"event": "progress", "data": json.dumps({"done": done, "total": total})}
        summary = (await job).as_dict()
        yield {"event": "done", "data": json.dumps(summary, default=str)}

    return EventSourceResponse(events(), ping=15)
