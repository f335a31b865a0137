"""Start-up state: what a server is doing before it can answer, so the port can open at once
and /health can say "loading" while the index opens, the starter knowledge loads and the
models warm up."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from server.errors import AppError


class Starting(AppError):
    """Asked too early: the server is still loading (or failed to)."""

    status = 503
    code = "starting"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Retry-After": "5"})


@dataclass
class Startup:
    state: str = "starting"  # starting, opening index, loading knowledge, warming up, ready, failed
    detail: str = ""
    done: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)  # shutdown during loading

    @property
    def ready(self) -> bool:
        return self.done.is_set() and self.state == "ready"

    def step(self, state: str, detail: str = "") -> None:
        if self.stop.is_set():
            raise StartupCancelled
        self.state, self.detail = state, detail

    def finish(self, *, error: str | None = None) -> None:
        self.state, self.detail = ("failed", error) if error else ("ready", "")
        self.done.set()

    def wait(self, timeout: float) -> None:
        """Block until ready, at most `timeout` seconds; then 503 if it is not."""
        self.done.wait(timeout)
        if not self.ready:
            what = f"{self.state}: {self.detail}" if self.detail else self.state
            raise Starting(f"the server is still starting ({what}); try again shortly")


class StartupCancelled(Exception):
    """The server is shutting down while it was still loading."""
