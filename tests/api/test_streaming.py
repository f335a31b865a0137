"""Streaming (SSE and WebSocket), disconnects, and load on the in-process model."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from server.db import make_engine
from tests.conftest import settings_for
from tests.helpers import sse_events
from tests.servers import copy_data, rodeoai_server

pytestmark = pytest.mark.one_pass  # the PostgreSQL pass leaves these to SQLite

ASK = {"messages": [{"role": "user", "content": "How do I keep my thumb safe when dallying?"}]}


def test_sse_sends_sources_then_tokens_then_done(client: TestClient) -> None:
    response = client.post("/api/chat/stream", json=ASK)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "sources" and kinds[-1] == "done"
    assert set(kinds[1:-1]) == {"token"}
    assert events[0][1]["sources"][0]["source"].startswith("knowledge/")
    done = events[-1][1]
    assert done["response"] and done["sources"] and done["backend"]
    assert done["time_to_first_token_ms"] <= done["latency_ms"]
    if not done["replaced"]:
        streamed = "".join(data["text"] for kind, data in events if kind == "token")
        assert streamed.strip()


def test_sse_bad_input_is_a_plain_json_error(client: TestClient) -> None:
    response = client.post(
        "/api/chat/stream", json={"messages": [{"role": "user", "content": " "}]}
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "empty_question"


def test_websocket_carries_the_same_events(client: TestClient) -> None:
    with client.websocket_connect("/ws/chat") as socket:
        socket.send_text(json.dumps(ASK))
        kinds = []
        while True:
            message = socket.receive_json()
            kinds.append(message["event"])
            if message["event"] in {"done", "error"}:
                break
        assert kinds[0] == "sources" and kinds[-1] == "done"
        socket.send_text('{"messages": []}')  # bad input keeps the socket open
        assert socket.receive_json()["data"]["code"] == "validation_error"


@pytest.fixture(scope="module")
def single_slot_server(
    shared_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    data = copy_data(shared_data, tmp_path_factory.mktemp("slot") / "data")
    with rodeoai_server(
        data,
        llm_slots="1",
        llm_queue="0",
        llm_max_tokens="512",
        llm_temperature="1.0",
        chat_guest_limit="1000/minute",
    ) as url:
        # The first question a server answers while generating runs seconds slower (first
        # use of torch beside llama.cpp), long enough for a short draft to finish first.
        assert httpx.post(f"{url}/api/chat", json=ASK, timeout=60).status_code == 200
        yield url, data


def test_disconnecting_mid_stream_stops_generation_and_frees_the_slot(
    single_slot_server: tuple[str, Path],
) -> None:
    url, data = single_slot_server
    long_answer = {
        "messages": [
            {
                "role": "user",
                "content": "Explain heeling, heading, dally safety and loop sizes in depth.",
            }
        ]
    }
    with httpx.Client(timeout=30) as http:
        with http.stream("POST", f"{url}/api/chat/stream", json=long_answer) as stream:
            lines = stream.iter_lines()
            while "event: token" not in next(lines):
                pass
            busy = http.post(f"{url}/api/chat", json=ASK)  # the only slot is taken ...
            assert busy.status_code == 503, busy.text
            assert busy.json()["error"]["code"] == "busy" and busy.headers["retry-after"]
        deadline = time.monotonic() + 120  # a cap for a stuck test, not a timing check
        while http.get(f"{url}/health").json()["models"]["backends"][0]["busy"]:
            assert time.monotonic() < deadline, "the slot was never freed"
            time.sleep(0.05)
        assert http.post(f"{url}/api/chat", json=ASK).status_code == 200
    # Freed because generation stopped at the disconnect, not because the draft ran out:
    engine = make_engine(settings_for(data).engine_url, upgrade=False)
    with engine.connect() as conn:
        status, tokens = conn.execute(
            text("SELECT status, tokens_out FROM answermetric WHERE question = :q"),
            {"q": long_answer["messages"][0]["content"]},
        ).one()
    assert status == "aborted" and tokens < 512, (status, tokens)


def test_twenty_concurrent_chats_get_answers_or_deliberate_503s(
    shared_data: Path, tmp_path: Path
) -> None:
    """Twenty chats at once on a queue of two: some are answered, the rest are shed as 503
    busy with Retry-After, and /health answers throughout."""
    queue = "2"
    data = copy_data(shared_data, tmp_path / "data")
    with rodeoai_server(
        # Short drafts: the test is about queueing and shedding, not about long answers.
        data,
        chat_guest_limit="1000/minute",
        llm_max_tokens="32",
        llm_queue=queue,
    ) as url:

        async def fire() -> tuple[list[httpx.Response], list[float]]:
            async with httpx.AsyncClient(timeout=120) as http:
                health_times: list[float] = []

                async def probe() -> None:
                    for _ in range(5):
                        started = time.monotonic()
                        assert (await http.get(f"{url}/health")).status_code == 200
                        health_times.append(time.monotonic() - started)
                        await asyncio.sleep(0.2)

                chats = [http.post(f"{url}/api/chat", json=ASK) for _ in range(20)]
                results = await asyncio.gather(*chats, probe())
                return list(results[:20]), health_times

        responses, health_times = asyncio.run(fire())
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) >= 1
    for response in responses:
        if response.status_code != 200:
            assert response.status_code in {429, 503}, response.text
            assert response.headers.get("retry-after")
            assert response.json()["error"]["code"] in {"busy", "rate_limited"}
    assert statuses.count(503) >= 1  # a short queue must shed load, and only as 503 busy
    print(
        f"statuses: {sorted(statuses)}; /health max {max(health_times) * 1000:.0f} ms "
        "during generation"
    )
