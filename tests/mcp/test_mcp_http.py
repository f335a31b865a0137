"""/mcp over streamable HTTP on a started `rodeoai serve`, driven by the official MCP client:
accounts mode, so sign-in, the chat quota and the error codes are those of /api/chat."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from server.config import Settings
from server.main import create_app
from tests.conftest import settings_for
from tests.helpers import sign_up
from tests.mcp.checks import QUESTION, error_code, structured, tools_by_name
from tests.servers import copy_data, rodeoai_server, serving

pytestmark = [pytest.mark.e2e, pytest.mark.one_pass]
DAILY = 3  # the free plan's questions a day on this server


@pytest.fixture(scope="module")
def url(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data = copy_data(shared_data, tmp_path_factory.mktemp("mcp-http") / "data")
    with rodeoai_server(
        data,
        access_mode="accounts",
        backends="extractive",
        free_daily_messages=str(DAILY),
        chat_user_limit="1000/minute",
        search_user_limit="1000/minute",
    ) as started:
        yield started


def account(url: str, email: str) -> dict[str, str]:
    with httpx.Client(base_url=url, timeout=60) as http:
        return sign_up(http, email)


def used_today(url: str, headers: dict[str, str]) -> int:
    reply = httpx.get(f"{url}/api/billing/status", headers=headers, timeout=30)
    assert reply.status_code == 200, reply.text
    return int(reply.json()["used_today"])


def mcp_client(url: str, headers: dict[str, str]) -> Client:
    http = httpx2.AsyncClient(headers=headers, timeout=120)
    return Client(streamable_http_client(f"{url}/mcp", http_client=http))


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def test_without_a_token_mcp_answers_401_in_our_error_shape(url: str) -> None:
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "probe", "version": "0"},
        },
    }
    headers = {"Accept": "application/json, text/event-stream"}
    for auth in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Bearer rk_x"}):
        reply = httpx.post(f"{url}/mcp", json=initialize, headers={**headers, **auth})
        assert reply.status_code == 401, reply.text
        assert reply.json()["error"]["code"] in {"unauthorized", "invalid_token"}
        assert reply.headers["www-authenticate"] == "Bearer"

    async def connect() -> None:
        async with mcp_client(url, {}) as client:
            await client.list_tools()

    with pytest.raises(BaseException) as refused:
        run(connect())
    assert isinstance(innermost(refused.value), MCPError)  # the SDK's error for an HTTP 401


def innermost(exc: BaseException) -> BaseException:
    """The error inside the SDK's task-group wrappers."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def test_tools_over_http_answer_with_citations_and_debit_the_quota(url: str) -> None:
    headers = account(url, "agent@example.com")

    async def scenario() -> dict[str, Any]:
        async with mcp_client(url, headers) as client:
            tools = await tools_by_name(client)
            found = structured(
                tools["search_knowledge"],
                await client.call_tool("search_knowledge", {"query": "team roping", "k": 3}),
            )
            assert len(found["passages"]) == 3
            before = await asyncio.to_thread(used_today, url, headers)
            answer = structured(
                tools["ask_rodeo_expert"],
                await client.call_tool("ask_rodeo_expert", {"question": QUESTION}),
            )
            after = await asyncio.to_thread(used_today, url, headers)
            assert (before, after) == (0, 1)  # searching is free; the question cost one
            resources = (await client.list_resources()).resources
            read = await client.read_resource(resources[0].uri)
            assert read.contents[0].text.startswith("# ")  # type: ignore[union-attr]
            return answer

    answer = run(scenario())
    assert answer["backend"] == "extractive" and answer["answer_id"] >= 1
    assert answer["citations"] and any(c["cited"] for c in answer["citations"])
    assert answer["feedback_token"] is None  # a signed-in user rates by account
    # The answer was recorded for this user like a /api/chat one: their feedback lands on it.
    rated = httpx.post(
        f"{url}/api/answers/{answer['answer_id']}/feedback",
        json={"rating": "up"},
        headers=headers,
    )
    assert rated.status_code in {200, 201}, rated.text


def test_an_api_key_works_and_bad_questions_cost_nothing_until_the_quota_runs_out(
    url: str,
) -> None:
    headers = account(url, "keyholder@example.com")
    created = httpx.post(
        f"{url}/api/users/me/api-keys", json={"name": "desktop"}, headers=headers, timeout=30
    )
    assert created.status_code == 201, created.text
    key = {"Authorization": f"Bearer {created.json()['key']}"}

    async def scenario() -> None:
        async with mcp_client(url, key) as client:
            await tools_by_name(client)
            ask = "ask_rodeo_expert"
            assert error_code(await client.call_tool(ask, {"question": ""})) == "empty_question"
            too_long = await client.call_tool(ask, {"question": "why " * 25_000})
            assert error_code(too_long) == "question_too_long"
            bad_level = await client.call_tool(ask, {"question": QUESTION, "skill_level": "god"})
            assert error_code(bad_level) == "validation_error"
            assert await asyncio.to_thread(used_today, url, headers) == 0
            for _ in range(DAILY):
                assert not (await client.call_tool(ask, {"question": QUESTION})).is_error
            spent = await client.call_tool(ask, {"question": QUESTION})
            assert error_code(spent) == "quota_exceeded"
            assert spent.structured_content["error"]["details"]["daily_messages"] == DAILY
            # A clear error, not a dropped session: the same client carries on.
            passage = await client.call_tool("get_passage", {"chunk_id": 2**62})
            assert error_code(passage) == "not_found"
            found = await client.call_tool("search_knowledge", {"query": "roping", "k": 99})
            assert error_code(found) == "validation_error"
            assert not (await client.call_tool("list_sources", {})).is_error

    run(scenario())
    assert used_today(url, headers) == DAILY


def test_open_mode_serves_guests_under_the_guest_rules(kb_settings: Settings) -> None:
    """No key in open mode: a guest, with the guest quota (here one question a day)."""
    settings = settings_for(kb_settings.data_dir, backends="extractive", guest_daily_messages=1)
    with serving(create_app(settings)) as base:

        async def scenario() -> None:
            async with mcp_client(base, {}) as client:
                tools = await tools_by_name(client)
                first = await client.call_tool("ask_rodeo_expert", {"question": QUESTION})
                answer = structured(tools["ask_rodeo_expert"], first)
                assert answer["feedback_token"]  # a guest rates with it
                second = await client.call_tool("ask_rodeo_expert", {"question": QUESTION})
                assert error_code(second) == "quota_exceeded"
                assert "sign in" in second.structured_content["error"]["message"]
                assert not (await client.call_tool("list_sources", {})).is_error

        run(scenario())
