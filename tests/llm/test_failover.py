"""The openai backend against a real OpenAI-compatible server we did not write
(llama_cpp.server), and failover when the primary is unreachable, errors, hangs or dies."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from fastapi.testclient import TestClient

from server.components import Components
from server.config import Settings
from server.llm.base import GenerationRequest
from server.llm.openai_backend import OpenAIBackend
from server.main import create_app
from tests.servers import free_port, llama_cpp_server

pytestmark = pytest.mark.one_pass  # the PostgreSQL pass leaves these to SQLite

QUESTION = "What is the penalty for a knocked barrel?"


@pytest.fixture(scope="module")
def llama_server() -> Iterator[str]:
    with llama_cpp_server() as (url, _process):
        yield url


class _Misbehaving(BaseHTTPRequestHandler):
    """A server that fails on purpose: answers 500, or accepts and never answers."""

    mode = "500"

    def do_POST(self) -> None:
        if self.mode == "hang":
            time.sleep(20)
            return
        body = b'{"error": {"message": "boom", "type": "server_error"}}'
        self.send_response(500)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def misbehaving(request: pytest.FixtureRequest) -> Iterator[str]:
    handler = type("Handler", (_Misbehaving,), {"mode": request.param})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def primary_then_local(kb_settings: Settings, base_url: str, **extra: Any) -> Settings:
    return kb_settings.model_copy(
        update={
            "backends": "openai,llamacpp,extractive",
            "openai_base_url": base_url,
            "openai_model": "smollm2",
            "grounding_check": False,
            "default_plan": "pro",
            **extra,
        }
    )


def test_openai_backend_streams_from_llama_cpp_server(llama_server: str) -> None:
    backend = OpenAIBackend(api_key="none", model="smollm2", base_url=llama_server)

    async def collect() -> list[str]:
        request = GenerationRequest(
            messages=[{"role": "user", "content": "Name one rodeo event."}],
            question="",
            max_tokens=24,
        )
        return [t async for t in backend.stream(request)]

    tokens = asyncio.run(collect())
    assert len(tokens) > 1 and "".join(tokens).strip()


def test_chat_answers_through_the_openai_backend(kb_settings: Settings, llama_server: str) -> None:
    components = Components(primary_then_local(kb_settings, llama_server))
    answer = asyncio.run(components.chat.answer([{"role": "user", "content": QUESTION}]))
    assert (answer.backend, answer.model) == ("openai", "smollm2")
    assert answer.skipped_backends == []


def check_failover(settings: Settings, expected_reason: str) -> None:
    components = Components(settings)
    # Loaded as a starting server loads it: a cold local model can miss a short first-token
    # deadline too, and then the answer would come from the extractive backend.
    components.embedder.encode(["warm up"])
    for backend in components.chain.backends:
        if backend.name == "llamacpp":
            backend.warm_up()  # type: ignore[attr-defined]
    answer = asyncio.run(components.chat.answer([{"role": "user", "content": QUESTION}]))
    assert answer.backend == "llamacpp"
    assert answer.skipped_backends[0]["backend"] == "openai"
    assert expected_reason in answer.skipped_backends[0]["reason"], answer.skipped_backends
    again = asyncio.run(components.chat.answer([{"role": "user", "content": QUESTION}]))
    assert again.skipped_backends[0]["reason"] == "cooling down after a failure"


def test_failover_when_the_primary_is_unreachable(kb_settings: Settings) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    check_failover(primary_then_local(kb_settings, url), "APIConnectionError")


@pytest.mark.parametrize("misbehaving", ["500"], indirect=True)
def test_failover_when_the_primary_returns_500(kb_settings: Settings, misbehaving: str) -> None:
    check_failover(primary_then_local(kb_settings, misbehaving), "InternalServerError")


@pytest.mark.parametrize("misbehaving", ["hang"], indirect=True)
def test_failover_when_the_primary_hangs_past_the_deadline(
    kb_settings: Settings, misbehaving: str
) -> None:
    # The hanging primary sleeps 20 s; 8 s is far past it for the local model's first token
    # even on a busy machine, and the same deadline applies to every backend.
    settings = primary_then_local(kb_settings, misbehaving, first_token_timeout_s=8)
    check_failover(settings, "no first token before the deadline")


def test_failover_when_the_primary_dies_mid_conversation(kb_settings: Settings) -> None:
    with llama_cpp_server() as (url, process):
        settings = primary_then_local(kb_settings, url)
        with TestClient(create_app(settings)) as api:
            password = "a long enough password"
            api.post("/api/auth/register", json={"email": "d@example.com", "password": password})
            token = api.post(
                "/api/auth/login", json={"email": "d@example.com", "password": password}
            ).json()
            headers = {"Authorization": f"Bearer {token['access_token']}"}
            first = api.post(
                "/api/chat",
                headers=headers,
                json={"messages": [{"role": "user", "content": QUESTION}]},
            ).json()
            assert first["backend"] == "openai"
            process.kill()
            process.wait()
            second = api.post(
                "/api/chat",
                headers=headers,
                json={
                    "conversation_id": first["conversation_id"],
                    "messages": [{"role": "user", "content": "And for pole bending?"}],
                },
            ).json()
            assert second["backend"] == "llamacpp"
            assert second["skipped_backends"][0]["backend"] == "openai"
            assert second["conversation_id"] == first["conversation_id"]
            saved = api.get(
                f"/api/conversations/{first['conversation_id']}", headers=headers
            ).json()
            assert [m["backend"] for m in saved["messages"]] == [None, "openai", None, "llamacpp"]


def test_an_experiments_backend_goes_first_and_its_model_reaches_that_backend_only() -> None:
    from server.llm.chain import FailoverChain
    from server.llm.fake import FakeBackend
    from server.llm.ollama_backend import OllamaBackend

    local, cloud = FakeBackend(["local"]), FakeBackend(["cloud"])
    local.name, cloud.name = "llamacpp", "openai"
    chain = FailoverChain([local, cloud])
    request = GenerationRequest(messages=[], question="q", models={"openai": "ft:gpt-4o-mini:x"})
    generation = asyncio.run(chain.start(request, prefer="openai"))
    assert (generation.backend, cloud.calls, local.calls) == ("openai", 1, 0)
    assert asyncio.run(chain.start(request)).backend == "llamacpp"  # no preference: in order
    cloud.fail_before = RuntimeError("down")
    fell_back = asyncio.run(chain.start(request, prefer="openai"))
    assert fell_back.backend == "llamacpp" and fell_back.skipped[0]["backend"] == "openai"

    openai = OpenAIBackend(api_key="x", model="gpt-4o")
    assert openai.model_for(request) == "ft:gpt-4o-mini:x"
    assert OllamaBackend(host="http://127.0.0.1:1", model="llama3").model_for(request) == "llama3"
