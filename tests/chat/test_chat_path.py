"""One chat path: every API's reply carries the answer's id, which reads the record back,
and a failure part-way through a stream ends cleanly for the official OpenAI and Ollama
clients. The generator is scripted (FakeBackend) where the failure is the point."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
import pytest
from sqlmodel import select

from server.db import AnswerMetric, Message, read_session
from server.llm.chain import FailoverChain
from server.llm.extractive import ExtractiveBackend
from server.llm.fake import FakeBackend
from server.main import create_app
from tests.conftest import settings_for
from tests.helpers import sign_up
from tests.servers import copy_data, serving

QUESTION = "What rope length should a beginner header use?"
ASK = {"messages": [{"role": "user", "content": QUESTION}]}
DRAFT = ["Beginner headers ", "commonly use ", "a 30 foot ", "rope [1]. ", "Practise daily."]


def served_with(
    backends: list[Any], shared_data: Path, tmp_path: Path
) -> Iterator[tuple[str, Any]]:
    data = copy_data(shared_data, tmp_path / "data")
    app = create_app(settings_for(data, chat_guest_limit="1000/minute"))
    app.state.components.chain = FailoverChain(backends)
    with serving(app) as url:
        yield url, app.state.components


@pytest.fixture
def answering(shared_data: Path, tmp_path: Path) -> Iterator[tuple[str, Any]]:
    yield from served_with([FakeBackend(DRAFT), ExtractiveBackend()], shared_data, tmp_path)


@pytest.fixture
def failing(shared_data: Path, tmp_path: Path) -> Iterator[tuple[str, Any]]:
    yield from served_with([FakeBackend(DRAFT, fail_after=2)], shared_data, tmp_path)


def record(components: Any, answer_id: int) -> AnswerMetric:
    with read_session(components.engine) as session:
        row = session.get(AnswerMetric, answer_id)
    assert row is not None, answer_id
    return row


def sse(text: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in text.strip().split("\r\n\r\n" if "\r\n" in text else "\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in lines:
            events.append((lines["event"], json.loads(lines["data"])))
    return events


def test_every_api_reply_carries_an_answer_id_that_reads_the_record_back(
    answering: tuple[str, Any],
) -> None:
    url, components = answering
    ids: dict[str, int] = {}
    with httpx.Client(base_url=url, timeout=60) as http:
        headers = sign_up(http, "ids@example.com")
        rest = http.post("/api/chat", json=ASK, headers=headers).json()
        ids["rest"] = rest["answer_id"]
        done = sse(http.post("/api/chat/stream", json=ASK).text)[-1]
        assert done[0] == "done"
        ids["sse"] = done[1]["answer_id"]
        v1 = http.post("/v1/chat/completions", json={"model": "rodeoai", **ASK}).json()
        ids["v1"] = v1["rodeoai"]["answer_id"]
        stream = http.post("/v1/chat/completions", json={"stream": True, **ASK}).text
        last = json.loads(stream.split("data: ")[-2])
        ids["v1-stream"] = last["rodeoai"]["answer_id"]
        ollama_reply = http.post("/ollama/api/chat", json={"stream": False, **ASK}).json()
        ids["ollama"] = ollama_reply["rodeoai"]["answer_id"]
        lines = http.post("/ollama/api/generate", json={"prompt": QUESTION}).text.splitlines()
        ids["ollama-stream"] = json.loads(lines[-1])["rodeoai"]["answer_id"]
    assert len(set(ids.values())) == len(ids), ids
    apis = {name: record(components, answer_id).api for name, answer_id in ids.items()}
    assert apis == {
        "rest": "chat",
        "sse": "chat",
        "v1": "openai",
        "v1-stream": "openai",
        "ollama": "ollama",
        "ollama-stream": "ollama",
    }
    saved = record(components, ids["rest"])
    assert saved.question == QUESTION and saved.response == rest["response"]
    assert saved.conversation_id == rest["conversation_id"] is not None
    with read_session(components.engine) as session:  # written with the record
        messages = session.exec(
            select(Message).where(Message.conversation_id == saved.conversation_id)
        ).all()
    assert [m.role for m in messages] == ["user", "assistant"]
    assert messages[1].content == saved.response


def test_a_failure_mid_stream_ends_cleanly_for_the_official_openai_client(
    failing: tuple[str, Any],
) -> None:
    url, _ = failing
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="sk-none", max_retries=0)
    chunks = list(
        client.chat.completions.create(
            model="rodeoai", messages=[{"role": "user", "content": QUESTION}], stream=True
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("Beginner headers commonly use")
    assert "stopped part-way" in text
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].model_extra and chunks[-1].model_extra["rodeoai"]["error"]["code"]


def test_a_failure_mid_stream_ends_cleanly_for_the_official_ollama_client(
    failing: tuple[str, Any],
) -> None:
    url, _ = failing
    client = ollama.Client(host=f"{url}/ollama")
    parts = list(
        client.chat(model="rodeoai", messages=[{"role": "user", "content": QUESTION}], stream=True)
    )
    text = "".join(p.message.content or "" for p in parts)
    assert text.startswith("Beginner headers commonly use") and "stopped part-way" in text
    assert parts[-1].done and parts[-1].done_reason == "error"
    generated = list(client.generate(model="rodeoai", prompt=QUESTION, stream=True))
    assert generated[-1].done and "stopped part-way" in "".join(g.response for g in generated)


def unfinished(components: Any) -> list[tuple[str, str]]:
    """Records of answers that did not finish (the copied knowledge may hold finished ones)."""
    with read_session(components.engine) as session:
        rows = session.exec(
            select(AnswerMetric.status, AnswerMetric.response).where(AnswerMetric.status != "done")
        ).all()
    return [(status, response) for status, response in rows]


def test_a_failed_stream_is_recorded_as_failed(failing: tuple[str, Any]) -> None:
    url, components = failing
    with httpx.Client(base_url=url, timeout=60) as http:
        events = sse(http.post("/api/chat/stream", json=ASK).text)
    assert events[-1][0] == "error"
    assert unfinished(components) == [("failed", "Beginner headers commonly use ")]


def test_a_client_that_leaves_mid_stream_is_recorded_as_aborted(
    shared_data: Path, tmp_path: Path
) -> None:
    slow = FakeBackend(DRAFT * 50, delay_s=0.05)
    for url, components in served_with([slow], shared_data, tmp_path):
        with (
            httpx.Client(base_url=url, timeout=60) as http,
            http.stream("POST", "/api/chat/stream", json=ASK) as stream,
        ):
            lines = stream.iter_lines()
            while "event: token" not in next(lines):
                pass
        deadline = time.monotonic() + 30  # a generous cap: the server notices the close
        while not unfinished(components):
            assert time.monotonic() < deadline, "no record of the aborted answer"
            time.sleep(0.1)
        [(status, response)] = unfinished(components)
        assert status == "aborted" and response.startswith("Beginner headers")
