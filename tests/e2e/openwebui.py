"""The real Open WebUI (PyPI open-webui, in its own cached venv) started offline against a
RodeoAI server, with a small recording proxy between the two so a test sees every request
body Open WebUI sends and every reply RodeoAI gives; and a client of Open WebUI's own API."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tests.servers import ROOT, free_port

VERSION = "0.12.4"
# Hop-by-hop and length headers are the proxy's own business on each side.
_DROP_REQUEST = {"host", "content-length", "connection", "accept-encoding"}
_DROP_REPLY = {"content-length", "transfer-encoding", "connection", "content-encoding"}


def openwebui_venv() -> Path:
    """The cached venv holding open-webui (created on first use: minutes, a few GB)."""
    done = subprocess.run(
        ["sh", str(ROOT / "scripts" / "openwebui_env.sh")],
        env={**os.environ, "OPENWEBUI_VERSION": VERSION},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"could not set up open-webui {VERSION}: {done.stderr[-3000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


@dataclass
class Exchange:
    """One request through the proxy and the reply it got (the body as text, SSE included)."""

    method: str
    path: str
    body: Any
    status: int = 0
    reply: str = ""
    done: bool = False

    def reply_json(self) -> Any:
        return json.loads(self.reply)


@dataclass
class RecordingProxy:
    """An ASGI app forwarding everything to `upstream`, streaming replies through unchanged,
    and keeping each exchange. Authorization travels on but is never recorded."""

    upstream: str
    exchanges: list[Exchange] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self) -> Starlette:
        methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
        return Starlette(routes=[Route("/{path:path}", self._forward, methods=methods)])

    def in_flight(self) -> int:
        with self._lock:
            return sum(not e.done for e in self.exchanges)

    def posts(self, path: str) -> list[Exchange]:
        with self._lock:
            return [e for e in self.exchanges if e.method == "POST" and e.path == path]

    async def _forward(self, request: Request) -> Response:
        raw = await request.body()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        exchange = Exchange(request.method, request.url.path, body)
        with self._lock:
            self.exchanges.append(exchange)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROP_REQUEST}
        client = httpx.AsyncClient(base_url=self.upstream, timeout=300)
        upstream = await client.send(
            client.build_request(
                request.method,
                request.url.path + (f"?{request.url.query}" if request.url.query else ""),
                headers=headers,
                content=raw,
            ),
            stream=True,
        )
        exchange.status = upstream.status_code

        async def relay() -> AsyncIterator[bytes]:
            pieces: list[bytes] = []
            try:
                async for piece in upstream.aiter_bytes():
                    pieces.append(piece)
                    yield piece
            finally:
                exchange.reply = b"".join(pieces).decode(errors="replace")
                exchange.done = True
                await upstream.aclose()
                await client.aclose()

        reply_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _DROP_REPLY}
        return StreamingResponse(relay(), status_code=upstream.status_code, headers=reply_headers)


def openwebui_env(data_dir: Path, openai_url: str, api_key: str) -> dict[str, str]:
    """Open WebUI's settings for a test: one OpenAI-compatible connection (RodeoAI's /v1 with
    the user's key), and nothing that reaches the internet or downloads a model at start-up.
    Names and defaults read from open_webui/env.py and config.py of 0.12.4."""
    return {
        "DATA_DIR": str(data_dir),
        "HF_HOME": str(data_dir / "hf"),
        "WEBUI_SECRET_KEY": secrets.token_hex(16),
        "WEBUI_AUTH": "True",  # a real admin account, created through its own sign-up API
        # OFFLINE_MODE sets HF_HUB_OFFLINE and turns the version check and model updates off;
        # the specific switches are set too, so a rename of one does not go unnoticed.
        "OFFLINE_MODE": "true",
        "HF_HUB_OFFLINE": "1",
        "ENABLE_VERSION_UPDATE_CHECK": "false",
        "RAG_EMBEDDING_MODEL_AUTO_UPDATE": "false",
        "RAG_RERANKING_MODEL_AUTO_UPDATE": "false",
        "WHISPER_MODEL_AUTO_UPDATE": "false",
        # Its own RAG embedder would load sentence-transformers from a hub; the OpenAI engine
        # (RodeoAI's /v1/embeddings, if ever used) loads nothing at start-up.
        "RAG_EMBEDDING_ENGINE": "openai",
        "ENABLE_OLLAMA_API": "false",
        "OPENAI_API_BASE_URLS": openai_url,
        "OPENAI_API_KEYS": api_key,
        "ENABLE_PIP_INSTALL_FRONTMATTER_REQUIREMENTS": "false",
        "ENABLE_COMMUNITY_SHARING": "false",
        "ANONYMIZED_TELEMETRY": "false",
        "DO_NOT_TRACK": "true",
        "SCARF_NO_ANALYTICS": "true",
        "USER_AGENT": "rodeoai-e2e",
        "GLOBAL_LOG_LEVEL": "INFO",
    }


@contextmanager
def open_webui(
    openai_url: str, api_key: str, *, log_path: Path, timeout: float = 300
) -> Iterator[str]:
    """`open-webui serve` on a free port, pointed at `openai_url`; yields its base URL once
    /health answers. Its output goes to `log_path`, which a failing test can show."""
    venv = openwebui_venv()
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="owui-") as data:
        env = {
            # A clean environment: the test venv's variables (VIRTUAL_ENV, RODEOAI_*) are not
            # Open WebUI's business, and its PATH must find its own venv first.
            "PATH": f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
            "HOME": data,
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            **openwebui_env(Path(data), openai_url, api_key),
        }
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [
                    str(venv / "bin" / "open-webui"),
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                ],
                env=env,
                cwd=data,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            url = f"http://127.0.0.1:{port}"
            try:
                _wait_for_health(process, url, log_path, timeout)
                yield url
            finally:
                process.terminate()
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def _wait_for_health(
    process: subprocess.Popen[bytes], url: str, log_path: Path, timeout: float
) -> None:
    deadline = time.monotonic() + timeout  # a cap for a stuck start, not a timing check
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"open-webui exited: {log_path.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"open-webui did not come up: {log_path.read_text()[-3000:]}")
        time.sleep(0.5)


class OpenWebUIClient:
    """Open WebUI's own HTTP API, as its front end calls it."""

    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=120)

    def sign_up_admin(self, password: str) -> dict[str, Any]:
        """The first account signed up on a fresh Open WebUI becomes its admin."""
        reply = self.http.post(
            "/api/v1/auths/signup",
            json={"name": "Rodeo Tester", "email": "admin@example.com", "password": password},
        )
        assert reply.status_code == 200, reply.text
        user: dict[str, Any] = reply.json()
        assert user["role"] == "admin", user
        self.http.headers["Authorization"] = f"Bearer {user['token']}"
        return user

    def model(self, model_id: str) -> dict[str, Any]:
        models = self.http.get("/api/models", params={"refresh": "true"})
        assert models.status_code == 200, models.text
        found = [m for m in models.json()["data"] if m["id"] == model_id]
        assert found, f"{model_id} not listed by Open WebUI: {models.text[:1000]}"
        return dict(found[0])

    def ask_in_new_chat(
        self, model: dict[str, Any], user: dict[str, Any], question: str
    ) -> tuple[str, str]:
        """The body Open WebUI 0.12.4's front end posts for a first message in a new chat:
        no chat_id and parent_id null (the server creates the chat), the user message and
        the assistant placeholder ids, a session id, and the background tasks it asks for."""
        user_id, reply_id = str(uuid.uuid4()), str(uuid.uuid4())
        now = int(time.time())
        user_message = {
            "id": user_id,
            "parentId": None,
            "childrenIds": [reply_id],
            "role": "user",
            "user": {"id": user["id"], "name": user["name"]},
            "user_id": user["id"],
            "content": question,
            "timestamp": now,
            "models": [model["id"]],
        }
        body = {
            "stream": True,
            "model": model["id"],
            "params": {"model_controls": {}},
            "tool_ids": [],
            "tool_servers": [],
            "features": {
                "voice": False,
                "image_generation": False,
                "code_interpreter": False,
                "web_search": False,
            },
            "variables": {"{{USER_NAME}}": user["name"], "{{USER_EMAIL}}": user["email"]},
            "chat_variables": {},
            "model_item": model,
            # The front end's socket.io id; events go to the user's room whatever it is.
            "session_id": f"e2e-{uuid.uuid4().hex[:12]}",
            "id": reply_id,
            "message_ids": [{"model_id": model["id"], "message_id": reply_id, "modelIdx": 0}],
            "parent_id": None,
            "user_message": user_message,
            "background_tasks": {
                "title_generation": True,
                "tags_generation": True,
                "follow_up_generation": True,
            },
        }
        reply = self.http.post("/api/chat/completions", json=body)
        assert reply.status_code == 200, reply.text
        started = reply.json()
        assert started.get("chat_id"), started
        return str(started["chat_id"]), reply_id

    def chat(self, chat_id: str) -> dict[str, Any]:
        reply = self.http.get(f"/api/v1/chats/{chat_id}")
        assert reply.status_code == 200, reply.text
        return dict(reply.json())

    def busy(self, chat_id: str) -> bool:
        return bool(self.http.get(f"/api/tasks/chat/{chat_id}").json().get("task_ids"))

    def tags(self, chat_id: str) -> list[str]:
        return [t["name"] for t in self.http.get(f"/api/v1/chats/{chat_id}/tags").json()]

    def generate_queries(self, model_id: str, chat_id: str, kind: str, question: str) -> None:
        """Open WebUI's query-generation task (it runs before retrieval from attached files,
        or before a web search), asked directly, so its real request body is captured too."""
        messages = [{"role": "user", "content": question}]
        self.http.post(
            "/api/v1/tasks/queries/completions",
            json={"model": model_id, "messages": messages, "chat_id": chat_id, "type": kind},
        )
