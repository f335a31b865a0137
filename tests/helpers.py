"""Small helpers shared by test files: sign-up and bearer headers, over any HTTP client;
a server-sent event body read back as (event, data) pairs; and the local model held busy."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from server.llm.batching import Job
from server.llm.llamacpp import LlamaCppBackend

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


@contextmanager
def model_held(backend: LlamaCppBackend) -> Iterator[None]:
    """Hold one of the local model's slots, as a long answer would: a real generation whose
    first token stalls the decoding thread until the block ends, then is cancelled."""
    engine = backend._engine
    release, gone = threading.Event(), threading.Event()
    prompt, _ = engine.prompt_tokens([{"role": "user", "content": "Tell a long story."}])
    engine.submit(
        Job(
            prompt=prompt,
            max_tokens=4096,
            temperature=0,
            deadline=time.monotonic() + 120,
            emit=lambda kind, value: release.wait(60),
            cancelled=gone,
        )
    )
    for _ in range(600):  # admitted on the decoding thread's next turn
        if backend.describe()["busy"]:
            break
        time.sleep(0.01)
    try:
        yield
    finally:
        gone.set()
        release.set()
