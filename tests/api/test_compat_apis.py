"""The official `openai` and `ollama` clients against our compatible APIs, served by a real
`rodeoai serve` process; and our `ollama` backend against that same server."""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import ollama
import openai
import pytest

from server.llm.base import GenerationRequest
from server.llm.chain import FailoverChain
from server.llm.ollama_backend import OllamaBackend
from tests.servers import copy_data, free_port, rodeoai_server

pytestmark = pytest.mark.one_pass  # the PostgreSQL pass leaves these to SQLite

QUESTION = "How long must a goat tie hold?"
CITATION = re.compile(r"\[\d\]")


@pytest.fixture(scope="module")
def server(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data = copy_data(shared_data, tmp_path_factory.mktemp("compat") / "data")
    with rodeoai_server(data, chat_guest_limit="1000/minute", chat_user_limit="1000/minute") as url:
        yield url


def api_key(server: str, email: str) -> str:
    password = "a long enough password"
    httpx.post(f"{server}/api/auth/register", json={"email": email, "password": password})
    token = httpx.post(
        f"{server}/api/auth/login", json={"email": email, "password": password}
    ).json()["access_token"]
    created = httpx.post(
        f"{server}/api/users/me/api-keys",
        json={"name": "client"},
        headers={"Authorization": f"Bearer {token}"},
    )
    return str(created.json()["key"])


def test_openai_client_chat_completion_with_sources(server: str) -> None:
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="sk-placeholder")
    reply = client.chat.completions.create(
        model="rodeoai", messages=[{"role": "user", "content": QUESTION}]
    )
    assert reply.choices[0].message.role == "assistant"
    assert CITATION.search(reply.choices[0].message.content or "")
    extra = reply.model_extra["rodeoai"]  # type: ignore[index]
    assert extra["sources"][0]["source"].startswith("knowledge/")
    assert reply.usage and reply.usage.completion_tokens > 0


def test_openai_client_streaming(server: str) -> None:
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="sk-placeholder")
    chunks = list(
        client.chat.completions.create(
            model="rodeoai", stream=True, messages=[{"role": "user", "content": QUESTION}]
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(chunks) > 3 and CITATION.search(text)
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].model_extra["rodeoai"]["sources"]  # type: ignore[index]


def test_openai_client_models_and_embeddings(server: str) -> None:
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="sk-placeholder")
    assert [m.id for m in client.models.list()] == ["rodeoai", "rodeoai-tasks"]
    vectors = client.embeddings.create(
        model="all-MiniLM-L6-v2", input=["dally safety", "barrel pattern"]
    )
    assert [len(v.embedding) for v in vectors.data] == [384, 384]
    same = client.embeddings.create(model="x", input="dally safety").data[0].embedding
    assert same == pytest.approx(vectors.data[0].embedding, abs=1e-5)
    raw = httpx.post(
        f"{server}/v1/embeddings", json={"input": "dally safety", "encoding_format": "base64"}
    ).json()
    decoded = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4")
    assert decoded.tolist() == pytest.approx(same, abs=1e-5)
    too_many = httpx.post(f"{server}/v1/embeddings", json={"input": ["x"] * 257})
    assert too_many.status_code == 422 and too_many.json()["error"]["code"] == "invalid_input"


def test_our_api_keys_work_as_the_openai_key(server: str) -> None:
    key = api_key(server, "openai-key@example.com")
    client = openai.OpenAI(base_url=f"{server}/v1", api_key=key)
    reply = client.chat.completions.create(
        model="rodeoai", messages=[{"role": "user", "content": QUESTION}]
    )
    assert reply.choices[0].message.content
    bad = openai.OpenAI(base_url=f"{server}/v1", api_key="rk_not-a-real-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_ollama_client_chat_generate_tags_and_embed(server: str) -> None:
    client = ollama.Client(host=f"{server}/ollama")
    assert [m.model for m in client.list().models] == ["rodeoai:latest", "rodeoai-tasks:latest"]
    reply = client.chat(
        model="rodeoai", messages=[{"role": "user", "content": QUESTION}], stream=False
    )
    assert CITATION.search(reply.message.content or "")
    parts = list(
        client.chat(model="rodeoai", stream=True, messages=[{"role": "user", "content": QUESTION}])
    )
    assert parts[-1].done and not any(p.done for p in parts[:-1])
    assert CITATION.search("".join(p.message.content or "" for p in parts))
    generated = client.generate(model="rodeoai", prompt=QUESTION, stream=False)
    assert generated.done and generated.response
    vectors = client.embed(model="rodeoai", input=["dally", "heel loop"]).embeddings
    assert [len(v) for v in vectors] == [384, 384]


def test_ollama_backend_against_our_ollama_api_in_another_process(server: str) -> None:
    backend = OllamaBackend(host=f"{server}/ollama", model="rodeoai")

    async def collect() -> str:
        request = GenerationRequest(
            messages=[{"role": "user", "content": QUESTION}], question=QUESTION
        )
        return "".join([t async for t in backend.stream(request)])

    assert CITATION.search(asyncio.run(collect()))


def test_ollama_backend_fails_over_when_its_server_is_unreachable(server: str) -> None:
    dead = OllamaBackend(host=f"http://127.0.0.1:{free_port()}", model="rodeoai")
    alive = OllamaBackend(host=f"{server}/ollama", model="rodeoai")
    chain = FailoverChain([dead, alive])

    async def run() -> tuple[str, list[dict[str, str]]]:
        request = GenerationRequest(
            messages=[{"role": "user", "content": QUESTION}], question=QUESTION
        )
        generation = await chain.start(request)
        text = "".join([t async for t in generation.tokens])
        return text, generation.skipped

    text, skipped = asyncio.run(run())
    assert text and skipped[0]["backend"] == "ollama"
    assert "Connect" in skipped[0]["reason"] or "connect" in skipped[0]["reason"]
