"""Start-up state: what a server is doing before it can answer, so the port can open at once
and /health can say "loading" while the index opens, the starter knowledge loads and the
models warm up."""

from __future__ import annotations

import threading
import time
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


class ShuttingDown(AppError):
    """Asked while the server drains for a shutdown: another replica, or this one after its
    restart, will answer."""

    status = 503
    code = "shutting_down"

    def __init__(self) -> None:
        super().__init__(
            "the server is shutting down; try again in a moment", headers={"Retry-After": "5"}
        )


class Shutdown:
    """A graceful shutdown's clock. On SIGTERM the server stops taking work; answers already
    streaming get `grace_s` to finish on their own, and after that each is cut at its next
    token and ends as a normal, recorded, shorter answer (never a dropped connection)."""

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self._deadline: float | None = None

    def begin(self) -> None:
        if self._deadline is None:
            self._deadline = time.monotonic() + self.grace_s

    @property
    def draining(self) -> bool:
        return self._deadline is not None

    def cut(self) -> bool:
        """True once a streaming answer should stop where it is."""
        return self._deadline is not None and time.monotonic() >= self._deadline

    def refuse_new_work(self) -> None:
        if self.draining:
            raise ShuttingDown
