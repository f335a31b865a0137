"""Regression tests for the HTTP rows of the hardening probe (issue 8): each names its row,
and each failed on the code before the fix. Real app, real models, real SQLite."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from server.components import Components
from server.config import Settings
from server.main import GuardMiddleware, create_app
from tests.conftest import MakeSettings, run_cli, settings_for
from tests.helpers import PASSWORD, bearer, sign_up
from tests.servers import copy_data, rodeoai_server

ASK = {"messages": [{"role": "user", "content": "What rope length should a beginner header use?"}]}
TOO_BIG = 2**63


@pytest.fixture
def settings(make_settings: MakeSettings) -> Settings:
    return make_settings(backends="extractive")


@pytest.fixture
def api(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def error_code(response: httpx.Response) -> str:
    return str(response.json()["error"]["code"])


def status_of(api: TestClient, headers: dict[str, str]) -> dict[str, Any]:
    reply = api.get("/api/billing/status", headers=headers)
    assert reply.status_code == 200, reply.text
    return dict(reply.json())


# --- row 1: a reply that is not an answer costs nothing ----------------------------------
def test_busy_replies_spend_no_credits(shared_data: Path, tmp_path: Path) -> None:
    """Row 1: 20 credits, 20 concurrent chats on one slot: 11 answered, 9 busy, and all 20
    credits were gone. Now the credits spent equal the answers given."""
    data = copy_data(shared_data, tmp_path / "data")
    with rodeoai_server(
        data,
        llm_slots="1",
        llm_queue="0",
        llm_max_tokens="64",
        free_daily_messages="0",  # credits only: every question costs one
        chat_user_limit="1000/minute",
    ) as url:
        with httpx.Client(base_url=url, timeout=60) as http:
            headers = sign_up(http, "buyer@example.com")
        granted = run_cli("billing", "grant", "buyer@example.com", "--credits", "20", data_dir=data)
        assert granted.returncode == 0, granted.stderr

        async def fire() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=url, timeout=120) as http:
                return list(
                    await asyncio.gather(
                        *(http.post("/api/chat", json=ASK, headers=headers) for _ in range(20))
                    )
                )

        replies = asyncio.run(fire())
        with httpx.Client(base_url=url, timeout=60) as http:
            status = http.get("/api/billing/status", headers=headers).json()
    statuses = [r.status_code for r in replies]
    answered = statuses.count(200)
    assert answered >= 1 and statuses.count(503) >= 1, statuses
    assert set(statuses) <= {200, 503}
    assert status["credits"] == 20 - answered, (statuses, status)


def test_no_index_and_failed_backends_spend_no_quota(
    make_settings: MakeSettings, shared_data: Path, tmp_path: Path
) -> None:
    """Row 1: IndexUnavailable and BackendError after the debit were never refunded."""
    empty = make_settings(backends="extractive", free_daily_messages=2)
    with TestClient(create_app(empty), raise_server_exceptions=False) as api:
        headers = sign_up(api, "early@example.com")
        reply = api.post("/api/chat", json=ASK, headers=headers)
        assert reply.status_code == 503, reply.text
        assert status_of(api, headers)["used_today"] == 0
    dead = settings_for(
        copy_data(shared_data, tmp_path / "kb"),
        backends="openai",
        openai_base_url="http://127.0.0.1:9/v1",  # nothing listens on the discard port
        free_daily_messages=2,
        default_plan="pro",
    )
    with TestClient(create_app(dead), raise_server_exceptions=False) as api:
        headers = sign_up(api, "late@example.com")
        reply = api.post("/api/chat", json=ASK, headers=headers)
        assert reply.status_code == 502 and error_code(reply) == "backend_error", reply.text
        assert status_of(api, headers)["used_today"] == 0


def test_zero_free_questions_means_credits_only(make_settings: MakeSettings) -> None:
    """Also seen: FREE_DAILY_MESSAGES=0 meant unlimited, so "credits only" was impossible."""
    settings = make_settings(backends="extractive", free_daily_messages=0)
    with TestClient(create_app(settings), raise_server_exceptions=False) as api:
        headers = sign_up(api, "nofree@example.com")
        status = status_of(api, headers)
        assert (status["daily_messages"], status["quota_left_today"]) == (0, 0)
        reply = api.post("/api/chat", json=ASK, headers=headers)
        assert reply.status_code == 402 and error_code(reply) == "quota_exceeded"
    unlimited = Components(make_settings(free_daily_messages=-1)).billing.plans["free"]
    assert unlimited.daily_messages is None


# --- row 3: the tokenizer shared by counting and encoding --------------------------------
@pytest.mark.one_pass
def test_counting_tokens_while_encoding_never_breaks_a_batch(
    shared_components: Components,
) -> None:
    """Row 3: count_tokens used the encoder's fast tokenizer without its lock; its shared
    padding state broke concurrent batches ("Unable to create tensor"). Thread switches are
    forced every microsecond so the race shows quickly (on the old code: 20 failures in these
    100 batches)."""
    embedder = shared_components.embedder
    texts = [f"Heelers swing {'a wide loop ' * (i % 40)} at the feet." for i in range(8)]
    errors: list[str] = []
    encoding = threading.Event()

    def encode() -> None:
        for _ in range(100):
            try:
                embedder.encode(texts, batch_size=8)
            except ValueError as exc:
                errors.append(str(exc))
        encoding.clear()

    def count() -> None:
        while encoding.is_set():
            embedder.count_tokens("short")

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        encoding.set()
        threads = [threading.Thread(target=encode)] + [
            threading.Thread(target=count) for _ in range(3)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert errors == []


# --- row 4: ids past 64 bits, and what a 500 looks like ----------------------------------
def test_ids_and_offsets_past_64_bits_are_422_not_500(api: TestClient) -> None:
    """Row 4: an id or offset >= 2^63 gave 500 on 8 routes."""
    headers = sign_up(api, "ids@example.com")
    calls = [
        ("GET", f"/api/conversations/{TOO_BIG}", None),
        ("PATCH", f"/api/conversations/{TOO_BIG}", {"title": "x"}),
        ("DELETE", f"/api/conversations/{TOO_BIG}", None),
        ("GET", f"/api/conversations?offset={TOO_BIG}", None),
        ("DELETE", f"/api/users/me/api-keys/{TOO_BIG}", None),
        ("POST", "/api/chat", {**ASK, "conversation_id": TOO_BIG}),
    ]
    for method, url, body in calls:
        reply = api.request(method, url, json=body, headers=headers)
        assert reply.status_code == 422, (method, url, reply.text)
        assert error_code(reply) == "validation_error"
        assert reply.json()["error"]["request_id"] == reply.headers["x-request-id"]


def test_admin_ids_past_64_bits_are_422(settings: Settings, api: TestClient) -> None:
    """Row 4, admin routes."""
    assert (
        run_cli(
            "users",
            "create-admin",
            "root@example.com",
            "--password-stdin",
            data_dir=settings.data_dir,
            input_text=PASSWORD + "\n",
        ).returncode
        == 0
    )
    headers = sign_up(api, "root@example.com")
    for method, url, body in [
        ("PATCH", f"/api/admin/users/{TOO_BIG}", {"disabled": True}),
        ("GET", f"/api/admin/users?offset={TOO_BIG}", None),
        ("POST", "/api/admin/refunds", {"order_id": TOO_BIG}),
    ]:
        reply = api.request(method, url, json=body, headers=headers)
        assert reply.status_code == 422, (method, url, reply.text)


def test_an_unexpected_error_keeps_the_request_id_and_security_headers() -> None:
    """Row 4: the 500 reply had no request id and no security headers, and the keep-alive
    connection was dropped (Starlette's outermost handler re-raised). The app below only
    raises: it stands for any bug we have not found yet."""

    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("a bug")

    app = GuardMiddleware(broken, max_body=1000)

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            return await http.get("/anything", headers={"x-request-id": "trace-1"})

    reply = asyncio.run(call())
    assert reply.status_code == 500
    assert reply.json()["error"] == {
        "code": "internal_error",
        "message": "something went wrong on our side; the request id is in the logs",
        "request_id": "trace-1",
    }
    assert reply.headers["x-request-id"] == "trace-1"
    assert reply.headers["x-content-type-options"] == "nosniff"
    assert "default-src 'self'" in reply.headers["content-security-policy"]


# --- row 10: bodies and the OpenAPI document ---------------------------------------------
def test_bad_bodies_get_the_right_status(make_settings: MakeSettings) -> None:
    """Row 10: a chunked body over the cap gave 400 (413 with Content-Length); invalid
    UTF-8, deep nesting and a non-UTF-8 charset gave a generic 400 where bad JSON gives 422."""
    settings = make_settings(backends="extractive", max_body_bytes=20_000)
    with TestClient(create_app(settings), raise_server_exceptions=False) as api:

        def chunks() -> Iterator[bytes]:
            for _ in range(30):
                yield b" " * 1000

        json_type = {"content-type": "application/json"}
        reply = api.post("/api/auth/login", content=chunks(), headers=json_type)
        assert reply.status_code == 413 and error_code(reply) == "payload_too_large"
        bodies = {
            "utf-8": (b'{"email": "\xff\xfe", "password": "x"}', json_type),
            "nesting": (b"[" * 5000 + b"]" * 5000, json_type),
            "charset": (
                '{"email": "é@example.com", "password": "x"}'.encode("latin-1"),
                {"content-type": "application/json; charset=latin-1"},
            ),
            "malformed": (b'{"email": ', json_type),
        }
        for name, (body, headers) in bodies.items():
            reply = api.post("/api/auth/login", content=body, headers=headers)
            assert reply.status_code == 422, (name, reply.text)
            assert error_code(reply) == "validation_error", name
            assert reply.json()["error"]["message"].startswith("body"), name


def test_openapi_documents_every_error_and_the_ndjson_stream(client: TestClient) -> None:
    """Row 10: 400, 402 and 403 were missing from the document; /ollama/api/generate's
    NDJSON was undocumented."""
    spec = client.get("/openapi.json").json()
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            documented = set(operation["responses"])
            assert {"400", "401", "403", "422", "500"} <= documented, (method, path)
            schema = operation["responses"]["422"]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorOut"}, (method, path)
    for path in ("/api/chat", "/v1/chat/completions", "/ollama/api/chat"):
        assert "402" in spec["paths"][path]["post"]["responses"], path
    generate = spec["paths"]["/ollama/api/generate"]["post"]["responses"]["200"]
    assert "application/x-ndjson" in generate["content"]


# --- row 11: the last administrator ------------------------------------------------------
def test_the_last_admin_cannot_demote_or_disable_themselves(
    settings: Settings, api: TestClient
) -> None:
    """Row 11: the last administrator could demote or disable themselves."""
    for email in ("boss@example.com", "deputy@example.com"):
        made = run_cli(
            "users",
            "create-admin",
            email,
            "--password-stdin",
            data_dir=settings.data_dir,
            input_text=PASSWORD + "\n",
        )
        assert made.returncode == 0, made.stderr
    boss = sign_up(api, "boss@example.com")
    users = {u["email"]: u["id"] for u in api.get("/api/admin/users", headers=boss).json()}
    deputy_id, boss_id = users["deputy@example.com"], users["boss@example.com"]
    demoted = api.patch(f"/api/admin/users/{deputy_id}", json={"role": "user"}, headers=boss)
    assert demoted.status_code == 200 and demoted.json()["role"] == "user"
    for change in ({"role": "expert"}, {"disabled": True}, {"role": "user", "disabled": True}):
        reply = api.patch(f"/api/admin/users/{boss_id}", json=change, headers=boss)
        assert reply.status_code == 409 and error_code(reply) == "last_admin", change
    me = api.get("/api/users/me", headers=boss).json()
    assert (me["role"], me["disabled"]) == ("admin", False)


# --- row 12: questions of nothing --------------------------------------------------------
def test_a_question_of_invisible_characters_is_empty_and_free(api: TestClient) -> None:
    """Row 12: a question made only of NUL or zero-width characters was answered and
    used up quota."""
    headers = sign_up(api, "blank@example.com")
    for content in ("\x00\x00\x00", "\u200b\u200c\u200d\ufeff", " \x00\u200b\n\t"):
        body = {"messages": [{"role": "user", "content": content}]}
        reply = api.post("/api/chat", json=body, headers=headers)
        assert reply.status_code == 422 and error_code(reply) == "empty_question", reply.text
    assert status_of(api, headers)["used_today"] == 0


# --- row 13: WebSocket frames ------------------------------------------------------------
def test_a_binary_websocket_frame_gets_an_error_event_and_the_socket_stays(
    client: TestClient,
) -> None:
    """Row 13: a binary frame raised KeyError and the socket dropped with no close frame."""
    with client.websocket_connect("/ws/chat") as socket:
        socket.send_bytes(b"\xff\xfe\x00")
        reply = socket.receive_json()
        assert reply["event"] == "error" and reply["data"]["code"] == "validation_error"
        socket.send_bytes(b'{"messages": [{"role": "user", "content": "What is a dally?"}]}')
        events = []
        while not events or events[-1] not in {"done", "error"}:
            events.append(socket.receive_json()["event"])
        assert events[0] == "sources" and events[-1] == "done"


# --- row 14: request ids -----------------------------------------------------------------
def test_a_forged_request_id_is_replaced(client: TestClient) -> None:
    """Row 14: X-Request-Id was taken verbatim, so a client could forge log lines."""
    for forged in ("abc] FAKE LINE [x", "a\tb", "x" * 65, "a b"):
        reply = client.get("/health", headers={"x-request-id": forged})
        rid = reply.headers["x-request-id"]
        assert rid != forged and rid.isalnum() and len(rid) == 16
    assert (
        client.get("/health", headers={"x-request-id": "lb-7f3a.2"}).headers["x-request-id"]
        == "lb-7f3a.2"
    )


# --- also seen: API keys and a password change; search limits ----------------------------
def test_a_password_change_revokes_api_keys_and_all_can_be_revoked_at_once(
    api: TestClient,
) -> None:
    """Also seen: API keys survived a password change."""
    headers = sign_up(api, "keys@example.com")
    keys = [
        api.post("/api/users/me/api-keys", json={"name": n}, headers=headers).json()["key"]
        for n in ("one", "two")
    ]
    assert all(api.get("/api/users/me", headers=bearer(k)).status_code == 200 for k in keys)
    changed = api.post(
        "/api/auth/password",
        json={"current_password": PASSWORD, "new_password": "a different passphrase"},
        headers=headers,
    )
    assert changed.status_code == 204, changed.text
    assert all(api.get("/api/users/me", headers=bearer(k)).status_code == 401 for k in keys)
    headers = sign_up(api, "keys@example.com", "a different passphrase")
    new = api.post("/api/users/me/api-keys", json={}, headers=headers).json()["key"]
    assert api.delete("/api/users/me/api-keys", headers=headers).status_code == 204
    assert api.get("/api/users/me", headers=bearer(new)).status_code == 401
    listed = api.get("/api/users/me/api-keys", headers=headers).json()
    assert len(listed) == 3 and all(k["revoked_at"] for k in listed)


def test_search_and_embeddings_are_rate_limited_for_guests(make_settings: MakeSettings) -> None:
    """Also seen: /api/search and the embeddings routes had no rate limit."""
    settings = make_settings(
        backends="extractive", search_guest_limit="3/minute", trust_forwarded_for=True
    )
    routes = [
        ("GET", "/api/search?q=dally", None),
        ("POST", "/v1/embeddings", {"input": "dally"}),
        ("POST", "/ollama/api/embed", {"input": "dally"}),
    ]
    with TestClient(create_app(settings), raise_server_exceptions=False) as api:
        for number, (method, url, body) in enumerate(routes, start=1):
            ip = {"x-forwarded-for": f"10.0.0.{number}"}
            for _ in range(3):
                assert api.request(method, url, json=body, headers=ip).status_code in {200, 503}
            reply = api.request(method, url, json=body, headers=ip)
            assert reply.status_code == 429 and reply.headers["retry-after"], url
