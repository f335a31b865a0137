"""Application errors. Every failure a client sees has the shape
`{"error": {"code": str, "message": str, "details"?: ..., "request_id"?: str}}`.

Services raise these; only `main.py` turns them into HTTP responses.
"""

from __future__ import annotations

from typing import Any


class AppError(Exception):
    """Base class: a stable machine code, a human message and an HTTP status."""

    status = 400
    code = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        if status:
            self.status = status
        self.details = details
        self.headers = headers or {}


class InvalidInput(AppError):
    status = 422
    code = "invalid_input"


class NotFound(AppError):
    status = 404
    code = "not_found"


class Conflict(AppError):
    """The request is valid but would break a rule about the current state."""

    status = 409
    code = "conflict"


class IndexUnavailable(AppError):
    """No knowledge is loaded, or the index cannot be used with the configured embedder."""

    status = 503
    code = "index_unavailable"


class Busy(AppError):
    """All generation slots and queue places are taken; the client should retry."""

    status = 503
    code = "busy"

    def __init__(self, message: str, *, retry_after: int = 5) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})


class BackendError(AppError):
    """An LLM backend failed; the failover chain catches this and tries the next one."""

    status = 502
    code = "backend_error"


class IngestError(AppError):
    """A single file could not be ingested (unreadable, empty, unsupported)."""

    status = 422
    code = "ingest_error"


def error_body(
    code: str, message: str, *, details: Any = None, request_id: str | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    if request_id:
        body["request_id"] = request_id
    return {"error": body}
