"""The signed-in user's profile and API keys."""

from __future__ import annotations

from fastapi import APIRouter, status

from server.api.deps import ComponentsDep, CurrentUser, ObjectId
from server.db import ApiKey
from server.schemas import ApiKeyCreated, ApiKeyIn, ApiKeyOut, ErrorOut, ProfilePatch, UserOut

router = APIRouter(prefix="/api/users/me", tags=["users"], responses={401: {"model": ErrorOut}})


@router.get("", response_model=UserOut)
def read_me(user: CurrentUser) -> UserOut:
    return UserOut.model_validate(user, from_attributes=True)


@router.patch("", response_model=UserOut, responses={422: {"model": ErrorOut}})
def update_me(body: ProfilePatch, user: CurrentUser, components: ComponentsDep) -> UserOut:
    """Change display name, skill level, events or classification. Role, plan and credits
    are not accepted here."""
    updated = components.accounts.update_profile(user, body.model_dump(exclude_unset=True))
    return UserOut.model_validate(updated, from_attributes=True)


def _key_out(key: ApiKey) -> ApiKeyOut:
    return ApiKeyOut.model_validate(key, from_attributes=True)


@router.get("/api-keys", response_model=list[ApiKeyOut])
def list_keys(user: CurrentUser, components: ComponentsDep) -> list[ApiKeyOut]:
    return [_key_out(k) for k in components.accounts.list_api_keys(user)]


@router.post("/api-keys", status_code=status.HTTP_201_CREATED, response_model=ApiKeyCreated)
def create_key(body: ApiKeyIn, user: CurrentUser, components: ComponentsDep) -> ApiKeyCreated:
    """Create an API key. The key is in this reply only; we keep just its hash."""
    key, raw = components.accounts.create_api_key(user, body.name)
    return ApiKeyCreated(**_key_out(key).model_dump(), key=raw)


@router.delete(
    "/api-keys/{key_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={404: {"model": ErrorOut}},
)
def revoke_key(key_id: ObjectId, user: CurrentUser, components: ComponentsDep) -> None:
    components.accounts.revoke_api_key(user, key_id)


@router.delete("/api-keys", status_code=status.HTTP_204_NO_CONTENT)
def revoke_all_keys(user: CurrentUser, components: ComponentsDep) -> None:
    """Revoke every API key of yours at once (a password change does this too)."""
    components.accounts.revoke_all_api_keys(user)


@router.delete("/answers")
def delete_my_answers(user: CurrentUser, components: ComponentsDep) -> dict[str, int]:
    """Delete every answer recorded for you (with its feedback and reviews), so the
    learning loop no longer uses it. Your conversations stay until you delete them."""
    return {"deleted": components.privacy.delete_own(user.id or 0)}
