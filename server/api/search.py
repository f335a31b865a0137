"""GET /api/search: the hybrid retriever on its own."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from server.api.deps import ComponentsDep, ObjectId, ReaderPrincipal, SearchPrincipal
from server.schemas import ErrorOut, PassageOut, SearchHit

router = APIRouter(prefix="/api", tags=["knowledge"])


@router.get(
    "/search",
    response_model=list[SearchHit],
    responses={
        401: {"model": ErrorOut},
        422: {"model": ErrorOut},
        429: {"model": ErrorOut, "description": "Too many searches; see Retry-After"},
        503: {"model": ErrorOut},
    },
)
def search(
    components: ComponentsDep,
    _reader: SearchPrincipal,
    q: Annotated[str, Query(max_length=2000, description="What to look for")],
    k: Annotated[int, Query(ge=1, le=50)] = 5,
) -> list[SearchHit]:
    """Best chunks for a query: FAISS and bm25 fused by reciprocal rank."""
    return [SearchHit.model_validate(h.as_dict()) for h in components.retriever.search(q, k)]


@router.get(
    "/passages/{chunk_id}",
    response_model=PassageOut,
    responses={401: {"model": ErrorOut}, 404: {"model": ErrorOut}},
)
def read_passage(
    chunk_id: ObjectId, components: ComponentsDep, _reader: ReaderPrincipal
) -> PassageOut:
    """The full text of a cited passage: the `chunk_id` of a source in an answer."""
    return PassageOut.of(components.retriever.passage(chunk_id))
