"""Saved conversations of the signed-in user. Another user's id is 404."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Query, status

from server.api.deps import ComponentsDep, CurrentUser, ObjectId, Offset
from server.db import Conversation
from server.schemas import (
    ConversationDetail,
    ConversationOut,
    ConversationPage,
    ConversationPatch,
    ErrorOut,
    MessageOut,
)

router = APIRouter(
    prefix="/api/conversations",
    tags=["conversations"],
    responses={401: {"model": ErrorOut}, 404: {"model": ErrorOut}},
)


def _out(conversation: Conversation) -> ConversationOut:
    return ConversationOut.model_validate(conversation, from_attributes=True)


@router.get("", response_model=ConversationPage)
def list_conversations(
    user: CurrentUser,
    components: ComponentsDep,
    q: Annotated[str | None, Query(max_length=200, description="Search titles and text")] = None,
    offset: Offset = 0,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> ConversationPage:
    """Newest first."""
    rows, total = components.conversations.list_for(
        user.id or 0, offset=offset, limit=limit, query=q
    )
    return ConversationPage(items=[_out(c) for c in rows], total=total, offset=offset, limit=limit)


@router.get("/{conversation_id}", response_model=ConversationDetail)
def read_conversation(
    conversation_id: ObjectId, user: CurrentUser, components: ComponentsDep
) -> ConversationDetail:
    store = components.conversations
    conversation = store.get(user.id or 0, conversation_id)
    messages = [
        MessageOut(
            id=m.id or 0,
            role=m.role,
            content=m.content,
            sources=json.loads(m.sources_json),
            backend=m.backend,
            model=m.model,
            metrics=json.loads(m.metrics_json),
            created_at=m.created_at,
        )
        for m in store.messages(conversation_id)
    ]
    return ConversationDetail(**_out(conversation).model_dump(), messages=messages)


@router.patch("/{conversation_id}", response_model=ConversationOut)
def rename_conversation(
    conversation_id: ObjectId, body: ConversationPatch, user: CurrentUser, components: ComponentsDep
) -> ConversationOut:
    return _out(components.conversations.rename(user.id or 0, conversation_id, body.title))


@router.delete("/{conversation_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_conversation(
    conversation_id: ObjectId, user: CurrentUser, components: ComponentsDep
) -> None:
    components.conversations.delete(user.id or 0, conversation_id)
