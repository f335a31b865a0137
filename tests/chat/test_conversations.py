"""Saved conversations, history in the prompt, skill level from the profile, and metrics."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from server.chat.prompting import SKILL_GUIDANCE
from server.config import Settings
from server.db import AnswerMetric, read_session
from server.main import create_app


@pytest.fixture
def api(kb_settings: Settings) -> Iterator[TestClient]:
    settings = kb_settings.model_copy(update={"llm_max_tokens": 48})
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def sign_in(api: TestClient, email: str) -> dict[str, str]:
    password = "a long enough password"
    api.post("/api/auth/register", json={"email": email, "password": password})
    token = api.post("/api/auth/login", json={"email": email, "password": password}).json()
    return {"Authorization": f"Bearer {token['access_token']}"}


def ask(api: TestClient, headers: dict[str, str], question: str, **extra: Any) -> dict[str, Any]:
    response = api.post(
        "/api/chat",
        headers=headers,
        json={"messages": [{"role": "user", "content": question}], **extra},
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_conversation_is_saved_titled_continued_listed_renamed_and_deleted(
    api: TestClient,
) -> None:
    me = sign_in(api, "talker@example.com")
    first = ask(api, me, "What is the penalty for breaking the barrier in team roping?")
    conversation = first["conversation_id"]
    assert conversation
    second = ask(api, me, "And in breakaway?", conversation_id=conversation)
    assert second["conversation_id"] == conversation
    other = ask(api, me, "How often should my horse see the farrier?")
    assert other["conversation_id"] != conversation

    detail = api.get(f"/api/conversations/{conversation}", headers=me).json()
    assert detail["title"] == "What is the penalty for breaking the barrier in team roping?"
    assert [m["role"] for m in detail["messages"]] == ["user", "assistant"] * 2
    assistant = detail["messages"][1]
    assert assistant["sources"] and assistant["backend"] and "latency_ms" in assistant["metrics"]

    page = api.get("/api/conversations", headers=me, params={"limit": 1}).json()
    assert page["total"] == 2 and [c["id"] for c in page["items"]] == [other["conversation_id"]]
    found = api.get("/api/conversations", headers=me, params={"q": "breakaway"}).json()
    assert [c["id"] for c in found["items"]] == [conversation]  # matched message text

    renamed = api.patch(
        f"/api/conversations/{conversation}", headers=me, json={"title": "Barrier rules"}
    )
    assert renamed.json()["title"] == "Barrier rules"
    assert api.delete(f"/api/conversations/{conversation}", headers=me).status_code == 204
    assert api.get(f"/api/conversations/{conversation}", headers=me).status_code == 404
    assert api.get("/api/conversations", headers=me).json()["total"] == 1


def test_another_users_conversation_is_404_everywhere(api: TestClient) -> None:
    owner = sign_in(api, "owner2@example.com")
    intruder = sign_in(api, "intruder2@example.com")
    conversation = ask(api, owner, "What is goat tying?")["conversation_id"]
    continued = api.post(
        "/api/chat",
        headers=intruder,
        json={
            "conversation_id": conversation,
            "messages": [{"role": "user", "content": "hi there"}],
        },
    )
    assert continued.status_code == 404
    streamed = api.post(
        "/api/chat/stream",
        headers=intruder,
        json={
            "conversation_id": conversation,
            "messages": [{"role": "user", "content": "hi there"}],
        },
    )
    assert streamed.status_code == 404
    assert api.get("/api/conversations", headers=intruder).json()["total"] == 0
    guest = api.post(
        "/api/chat",
        json={
            "conversation_id": conversation,
            "messages": [{"role": "user", "content": "hi there"}],
        },
    )
    assert guest.status_code == 422


def test_history_reaches_the_prompt(api: TestClient) -> None:
    me = sign_in(api, "history@example.com")
    first = ask(api, me, "Tell me about heel loops")
    components = api.app.state.components  # type: ignore[attr-defined]
    user_id = api.get("/api/users/me", headers=me).json()["id"]

    async def prompt() -> list[dict[str, str]]:
        run = await components.chat.begin(
            [{"role": "user", "content": "and for headers?"}],
            user_id=user_id,
            conversation_id=first["conversation_id"],
        )
        async for _ in components.chat.tokens(run):
            pass
        return list(run.request.messages)

    messages = asyncio.run(prompt())
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[1]["content"] == "Tell me about heel loops"


def test_skill_level_comes_from_the_profile_unless_the_request_overrides(
    api: TestClient,
) -> None:
    me = sign_in(api, "pro@example.com")
    api.patch("/api/users/me", headers=me, json={"skill_level": "pro"})
    assert ask(api, me, "How do I rate a steer?")["skill_level"] == "pro"
    assert ask(api, me, "How do I rate a steer?", skill_level="beginner")["skill_level"] == (
        "beginner"
    )
    components = api.app.state.components  # type: ignore[attr-defined]

    async def system_prompt(level: str) -> str:
        run = await components.chat.begin(
            [{"role": "user", "content": "rope length?"}], skill_level=level
        )
        async for _ in components.chat.tokens(run):
            pass
        return str(run.request.messages[0]["content"])

    assert SKILL_GUIDANCE["pro"] in asyncio.run(system_prompt("pro"))
    assert SKILL_GUIDANCE["beginner"] in asyncio.run(system_prompt("beginner"))


def test_every_answer_records_metrics(api: TestClient) -> None:
    components = api.app.state.components  # type: ignore[attr-defined]
    with read_session(components.engine) as session:  # the copied data may hold older rows
        before = len(session.exec(select(AnswerMetric.id)).all())
    me = sign_in(api, "metrics@example.com")
    answer = ask(api, me, "What is a hazer?")
    api.post(
        "/v1/chat/completions",
        json={"model": "rodeoai", "messages": [{"role": "user", "content": "What is a hazer?"}]},
    )
    with read_session(components.engine) as session:
        rows = session.exec(select(AnswerMetric).order_by(AnswerMetric.id)).all()[before:]  # type: ignore[arg-type]
    assert [r.api for r in rows] == ["chat", "openai"]
    first = rows[0]
    assert first.question == "What is a hazer?" and first.response == answer["response"]
    assert first.conversation_id == answer["conversation_id"] and first.user_id
    assert first.tokens_in > 0 and first.tokens_out > 0 and first.chunks_used > 0
    assert first.time_to_first_token_ms is not None and first.latency_ms >= 0
    recorded = json.loads(first.sources_json)
    assert recorded == answer["sources"]  # with their retrieval scores, for review
    assert recorded[0]["source"].startswith("knowledge/") and recorded[0]["score"] > 0
    assert rows[1].user_id is None  # a guest
