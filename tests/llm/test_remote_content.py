"""Hardening row 6: remote images, links and raw HTML from documents were quoted verbatim
into answers (28 of 40 in the injection test), so any client rendering Markdown fetched an
attacker's URL. Answers now never carry them: in facts, evidence lines, extractive answers
and model output, streamed or not."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from server.components import Components
from server.llm.chain import FailoverChain
from server.llm.extractive import ExtractiveBackend
from server.llm.fake import FakeBackend
from server.llm.remote import StreamFilter, strip_remote
from server.main import create_app
from tests.conftest import MakeSettings

EVIL = "evil.example"
POISONED = f"""# Heel loop size

Heelers commonly build a heel loop about six feet across. ![tracker](http://{EVIL}/pixel.png)
Read more at [the heeling guide](https://{EVIL}/guide?q=(1)) before practice.
<img src="http://{EVIL}/x.gif" onerror="alert(1)"> A heel loop stands up against the legs.
<a href="http://{EVIL}/">Clinics</a> teach heelers to time the loop with the steer's hops.

[ref]: http://{EVIL}/ref
"""
QUESTION = "How big should a heel loop be?"


def assert_clean(text: str) -> None:
    assert EVIL not in text and "<img" not in text and "<a " not in text, text
    assert "![" not in text and "](" not in text, text


def test_strip_remote_keeps_the_words_and_citations() -> None:
    text = (
        "Use a soft rope [1][2]. ![x](http://e/p.png) See [the guide](http://e/g) <b>now</b>. "
        "<!-- hidden --> a < b and 3 > 2. <https://e/auto>"
    )
    assert strip_remote(text) == (
        "Use a soft rope [1][2].  See the guide now.  a < b and 3 > 2. https://e/auto"
    )


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7])
def test_the_stream_filter_never_lets_a_split_image_or_tag_through(size: int) -> None:
    draft = (
        "Heelers rope feet [1]. ![pixel](http://evil.example/p.png) Then "
        "[click](http://evil.example/x) or <img src=http://evil.example/y.gif> dally [2]! Done"
    )
    remote = StreamFilter()
    pieces = [remote.feed(draft[i : i + size]) for i in range(0, len(draft), size)]
    pieces.append(remote.flush())
    shown = "".join(pieces)
    assert shown == strip_remote(draft)
    assert_clean(shown)
    plain = draft.index("[")  # text before any construct streams as it comes
    assert "".join(pieces[: plain // size]) == draft[: plain // size * size]


@pytest.fixture
def poisoned_app(make_settings: MakeSettings, tmp_path: Path) -> Iterator[TestClient]:
    doc = tmp_path / "kb" / "heel-loops.md"
    doc.parent.mkdir()
    doc.write_text(POISONED)
    settings = make_settings(backends="extractive")
    Components(settings).ingestor.ingest([doc.parent])
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def test_extractive_answers_and_evidence_carry_no_remote_content(
    poisoned_app: TestClient,
) -> None:
    reply = poisoned_app.post(
        "/api/chat", json={"messages": [{"role": "user", "content": QUESTION}]}
    )
    assert reply.status_code == 200, reply.text
    answer = reply.json()
    assert "six feet" in answer["response"] and answer["sources"]
    assert_clean(answer["response"])


def test_model_output_streamed_through_v1_carries_no_remote_content(
    poisoned_app: TestClient,
) -> None:
    """A model that copies or invents an image: the scripted draft splits it over tokens."""
    draft = [
        "Heelers build a loop about six feet across [1]. ",
        "![pix](http://evil",
        ".example/p.png) ",
        "<img src=http://evil.example/y.gif>",
        "Time the loop with the steer's hops [1].",
    ]
    components = poisoned_app.app.state.components  # type: ignore[attr-defined]
    components.chain = FailoverChain([FakeBackend(draft), ExtractiveBackend()])
    components.__dict__.pop("chat", None)  # rebuilt on the scripted chain
    body = {"model": "rodeoai", "stream": True, "messages": [{"role": "user", "content": QUESTION}]}
    with poisoned_app.stream("POST", "/v1/chat/completions", json=body) as stream:
        lines = [line for line in stream.iter_lines() if line.startswith("data: {")]
    text = "".join(
        chunk["choices"][0]["delta"].get("content") or ""
        for chunk in (json.loads(line[6:]) for line in lines)
    )
    assert "six feet" in text
    assert_clean(text)
    plain = poisoned_app.post("/v1/chat/completions", json={**body, "stream": False}).json()
    assert_clean(plain["choices"][0]["message"]["content"])
