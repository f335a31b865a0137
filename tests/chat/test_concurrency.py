"""Many questions at once through the real embedder, retriever and HTTP server; only the
generator is scripted (FakeBackend), so the test measures everything around it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from server.llm.chain import FailoverChain
from server.llm.fake import FakeBackend
from server.main import create_app
from tests.conftest import settings_for
from tests.servers import copy_data, serving

QUESTIONS = [
    "What rope length should a beginner header use?",
    "How do I dally without losing a thumb?",
    "What is the penalty for a knocked barrel?",
    "How big should a heel loop be?",
    "What does a good heel horse need?",
]
DRAFT = ["Beginner headers ", "commonly use ", "30 to 31 foot ", "ropes [1]. ", "Practise daily."]


@pytest.fixture
def served(shared_data: Path, tmp_path: Path) -> Iterator[str]:
    """The real app in a real uvicorn server, on a private copy of the knowledge."""
    data = copy_data(shared_data, tmp_path / "data")
    app = create_app(settings_for(data, chat_guest_limit="1000/minute"))
    app.state.components.chain = FailoverChain([FakeBackend(DRAFT, delay_s=0.01)])
    with serving(app) as url:
        yield url


def test_forty_concurrent_chats_never_give_500(served: str) -> None:
    """Hardening row 3: 2 of 200 chats at concurrency 20 failed with 500 ("Unable to create
    tensor"), when token counting raced the encoder on one tokenizer."""

    async def fire() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=served, timeout=120) as http:
            calls = [
                http.post(
                    "/api/chat" if n % 2 else "/api/chat/stream",
                    json={"messages": [{"role": "user", "content": QUESTIONS[n % 5]}]},
                )
                for n in range(40)
            ]
            return list(await asyncio.gather(*calls))

    # One round per engine: the tokenizer race itself is forced far harder by
    # tests/api/test_hardening_api.py; this proves the whole path under 40 at once, and on
    # PostgreSQL its concurrent answer records.
    replies = asyncio.run(fire())
    assert [r.status_code for r in replies] == [200] * 40, [r.text for r in replies][:3]
    for reply in replies:
        assert "event: error" not in reply.text and "internal_error" not in reply.text
    answers = [r.json() for r in replies if r.headers["content-type"].startswith("app")]
    assert all(a["sources"] and a["backend"] in {"fake", "extractive"} for a in answers)
