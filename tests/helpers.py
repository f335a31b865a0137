"""Small helpers shared by test files: sign-up and bearer headers, over any HTTP client;
and a server-sent event body read back as (event, data) pairs."""

from __future__ import annotations

import json
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


def sse_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in fields:
            found.append((fields["event"], json.loads(fields["data"])))
    return found
