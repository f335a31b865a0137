"""POST /api/chat: one question in, one cited answer out."""

from __future__ import annotations

from fastapi import APIRouter

from server.routes.deps import ChatPrincipal, ComponentsDep
from server.schemas import ChatRequest, ChatResponse, ErrorOut

router = APIRouter(prefix="/api", tags=["chat"])

_ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorOut, "description": "Sign-in required (accounts mode) or bad token"},
    429: {"model": ErrorOut, "description": "Too many questions; see Retry-After"},
    422: {"model": ErrorOut, "description": "Empty, over-long or malformed question"},
    503: {"model": ErrorOut, "description": "No knowledge loaded, or the model is busy"},
}


@router.post("/chat", response_model=ChatResponse, responses=_ERRORS)
async def chat(
    body: ChatRequest, components: ComponentsDep, principal: ChatPrincipal
) -> ChatResponse:
    """Answer the last user message from the knowledge base, citing sources as [n].

    The depth follows `skill_level`, else the user's profile, else the default."""
    profile_level = principal.user.skill_level if principal.user else None
    level = body.skill_level or profile_level or components.settings.default_skill_level
    answer = await components.chat.answer(
        [m.model_dump() for m in body.messages],
        skill_level=level,  # type: ignore[arg-type]
    )
    return ChatResponse.model_validate(answer, from_attributes=True)
