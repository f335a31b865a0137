"""`rodeoai serve` as an operator starts it: the port opens at once and /health says what is
loading; several workers load the starter knowledge once between them."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.conftest import KNOWLEDGE
from tests.servers import rodeoai_server, wait_ready

ASK = {"messages": [{"role": "user", "content": "How long is a heading rope?"}]}


@pytest.mark.models_only
def test_the_port_opens_while_the_starter_knowledge_loads(tmp_path: Path) -> None:
    """Architecture issue, item 6: the port used to open only after first-run ingestion."""
    data = tmp_path / "data"
    data.mkdir()
    with rodeoai_server(
        data, ready=False, autoload_knowledge="true", backends="extractive", startup_wait_s="0"
    ) as url:
        early = httpx.get(f"{url}/health", timeout=30).json()
        asked = httpx.post(f"{url}/api/chat", json=ASK, timeout=60)
        health = wait_ready(url)
        answered = httpx.post(f"{url}/api/chat", json=ASK, timeout=60)
    assert early["status"] == "loading", early
    assert early["startup"]["state"] in {"starting", "opening index", "loading knowledge"}
    if asked.status_code != 200:  # asked before the knowledge was in
        assert asked.status_code == 503 and asked.json()["error"]["code"] == "starting"
        assert asked.headers["retry-after"]
    assert health["status"] == "ok" and health["startup"]["state"] == "ready"
    assert answered.status_code == 200 and answered.json()["sources"]


def test_two_workers_load_the_starter_knowledge_once_and_both_answer(tmp_path: Path) -> None:
    """Architecture issue, item 6: `rodeoai serve --workers N`, first-run ingestion under a
    lock, not once per worker."""
    data = tmp_path / "data"
    data.mkdir()
    with rodeoai_server(
        data, args=("--workers", "2"), autoload_knowledge="true", backends="extractive"
    ) as url:
        health = wait_ready(url)
        replies = [httpx.post(f"{url}/api/chat", json=ASK, timeout=120) for _ in range(8)]
        final = httpx.get(f"{url}/health", timeout=30).json()
    assert health["status"] == "ok"
    assert final["documents"] == len(list(KNOWLEDGE.glob("*.md")))
    assert final["chunks"] == final["index"]["vectors"]
    assert all(r.status_code == 200 and r.json()["sources"] for r in replies)
