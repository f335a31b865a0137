"""Small helpers shared by test files: sign-up and bearer headers, over any HTTP client."""

from __future__ import annotations

from typing import Any, Protocol

PASSWORD = "correct horse battery"


class Http(Protocol):
    def post(self, url: str, **kwargs: Any) -> Any: ...


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def sign_up(http: Http, email: str, password: str = PASSWORD) -> dict[str, str]:
    """Register (or reuse) an account and return its Authorization header."""
    http.post("/api/auth/register", json={"email": email, "password": password})
    reply = http.post("/api/auth/login", json={"email": email, "password": password})
    assert reply.status_code == 200, reply.text
    return bearer(reply.json()["access_token"])
