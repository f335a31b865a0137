"""Start real server processes for tests on free ports, and stop them afterwards."""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import httpx
import uvicorn

from server.llm.llamacpp import bundled_model_path
from tests import databases

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SERVER_PIDS: dict[str, int] = {}  # url -> pid, for tests that kill a server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running(
    command: list[str],
    ready_url: str,
    *,
    env: dict[str, str] | None = None,
    timeout: float = 120,
    cwd: Path = ROOT,
) -> Iterator[subprocess.Popen[bytes]]:
    # A file, not a pipe: a chatty server would block once a pipe's buffer filled up.
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            command,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        try:
            _wait_until_up(process, ready_url, log, timeout)
            yield process
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()


def _wait_until_up(
    process: subprocess.Popen[bytes], url: str, log: IO[bytes], timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"server exited: {log.read().decode()[-2000:]}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not come up")
        time.sleep(0.2)


@contextmanager
def rodeoai_server(
    data_dir: Path,
    *,
    cwd: Path = ROOT,
    args: tuple[str, ...] = (),
    ready: bool = True,
    **settings: str,
) -> Iterator[str]:
    """`rodeoai serve [args]` in its own process, on a data folder of the caller's. It
    returns once the server has loaded, or with `ready=False` as soon as the port answers."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RODEOAI_")}
    env.update(
        {
            "RODEOAI_DATA_DIR": str(data_dir),
            "RODEOAI_PORT": str(port),
            "RODEOAI_LOG_LEVEL": "WARNING",
            "RODEOAI_AUTOLOAD_KNOWLEDGE": "false",
            "RODEOAI_LLM_MAX_TOKENS": "96",  # as settings_for: short drafts
            "RODEOAI_FACT_CACHE_WARMUP": "false",  # as settings_for
            **databases.database_env(data_dir),
            **{f"RODEOAI_{k.upper()}": v for k, v in settings.items()},
        }
    )
    url = f"http://127.0.0.1:{port}"
    command = [str(BIN / "rodeoai"), "serve", *args]
    with running(command, f"{url}/health", env=env, cwd=cwd) as process:
        SERVER_PIDS[url] = process.pid
        if ready:
            wait_ready(url)
        yield url


def wait_ready(url: str, *, cap_s: float = 240) -> dict[str, Any]:
    """Poll /health until the server has loaded (a generous cap, not a timing assertion)."""
    deadline = time.monotonic() + cap_s
    while True:
        health: dict[str, Any] = httpx.get(f"{url}/health", timeout=30).json()
        if health["status"] != "loading":
            return health
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} still loading: {health}")
        time.sleep(0.3)


@contextmanager
def llama_cpp_server() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """llama-cpp-python's own OpenAI-compatible server with the bundled model."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(bundled_model_path()),
        "--port",
        str(port),
        "--n_ctx",
        "2048",
        "--model_alias",
        "smollm2",
    ]
    with running(command, f"http://127.0.0.1:{port}/v1/models") as process:
        yield f"http://127.0.0.1:{port}/v1", process


def copy_data(source: Path, target: Path) -> Path:
    """A private copy of an ingested data folder: its database (SQLite's backup API, never
    a file copy; or a PostgreSQL database cloned from a template) and its FAISS index."""
    target.mkdir(parents=True)
    if databases.on_postgres():
        databases.copy_database(source, target)
    else:
        with (
            sqlite3.connect(source / "rodeoai.db") as src,
            sqlite3.connect(target / "rodeoai.db") as dst,
        ):
            src.backup(dst)
    shutil.copytree(source / "index", target / "index")
    return target


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """An app object of the caller's (say, with a scripted chain) in a real uvicorn server,
    in this process, so real HTTP clients can reach it."""
    server = uvicorn.Server(uvicorn.Config(app, port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("in-process server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
