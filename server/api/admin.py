"""Administration: users and their roles, and the e-mail outbox."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from server.api.deps import AdminUser, ComponentsDep, ObjectId, Offset
from server.schemas import AdminUserPatch, ErrorOut, MailOut, UserOut

router = APIRouter(
    prefix="/api/admin",
    tags=["admin"],
    responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut}},
)


@router.get("/users", response_model=list[UserOut])
def list_users(
    _admin: AdminUser,
    components: ComponentsDep,
    offset: Offset = 0,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> list[UserOut]:
    return [
        UserOut.model_validate(u, from_attributes=True)
        for u in components.accounts.list_users(offset=offset, limit=limit)
    ]


@router.patch(
    "/users/{user_id}",
    response_model=UserOut,
    responses={404: {"model": ErrorOut}, 409: {"model": ErrorOut, "description": "Last admin"}},
)
def update_user(
    user_id: ObjectId, body: AdminUserPatch, _admin: AdminUser, components: ComponentsDep
) -> UserOut:
    """Change a role, or disable a user (which signs them out everywhere). The last active
    administrator cannot be demoted or disabled (409 `last_admin`)."""
    user = components.accounts.admin_update(user_id, role=body.role, disabled=body.disabled)
    return UserOut.model_validate(user, from_attributes=True)


@router.get("/mail", response_model=list[MailOut])
def list_mail(
    _admin: AdminUser,
    components: ComponentsDep,
    status: Literal["pending", "sending", "sent", "failed"] | None = None,
    offset: Offset = 0,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> list[MailOut]:
    """The e-mail outbox, newest first: each mail's state, attempts and the SMTP server's
    last error (`status=failed` lists the ones that gave up). Bodies are never shown."""
    rows = components.mail.rows(status=status, offset=offset, limit=limit)
    return [MailOut.model_validate(row, from_attributes=True) for row in rows]
