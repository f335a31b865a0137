"""RODEOAI_LOG_FORMAT=json: one JSON object per line, each request's lines carry its id, and
no secret reaches the log, not even by way of an error message or a traceback."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from server import logs
from server.config import Settings
from server.main import create_app
from tests.helpers import PASSWORD

pytestmark = pytest.mark.one_pass  # engine-agnostic

SECRET_KEY = "log-test-signing-key-0123456789abcdef0123"


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    logs.configure("INFO", as_json=True, stream=stream)
    yield stream
    logs.configure("INFO")


def test_json_lines_carry_request_ids_and_no_secrets(
    kb_settings: Settings, json_logs: io.StringIO
) -> None:
    settings = kb_settings.model_copy(
        update={"secret_key": SecretStr(SECRET_KEY), "log_format": "json"}
    )
    assert settings.json_logs
    with TestClient(create_app(settings), raise_server_exceptions=False) as http:
        json_logs.truncate(0)  # start-up lines are not the point
        json_logs.seek(0)
        http.post("/api/auth/register", json={"email": "log@example.com", "password": PASSWORD})
        login = http.post(
            "/api/auth/login", json={"email": "log@example.com", "password": PASSWORD}
        )
        assert login.status_code == 200, login.text
        token = login.json()["access_token"]
        wrong = http.post(
            "/api/auth/login", json={"email": "log@example.com", "password": "x" * 12}
        )
        me = http.get("/api/users/me", headers={"Authorization": f"Bearer {token}"})
        # A message that quotes secrets, as a careless exception might: masked on the way out.
        logging.getLogger("server.test").warning(
            "upstream said: Authorization: Bearer %s; url postgresql://rodeo:hunter2@db/x", token
        )
        lines = json_logs.getvalue().splitlines()
    stray = [line for line in lines if line.strip() and not line.startswith("{")]
    assert not stray, "\n".join(stray)
    records = [json.loads(line) for line in lines if line.strip()]
    assert records and all(
        {"time", "level", "logger", "request_id", "message"} <= r.keys() for r in records
    )
    by_request = {r["request_id"]: r["message"] for r in records if r["logger"] == "server.http"}
    for reply, route in ((login, "/api/auth/login"), (wrong, "/api/auth/login"), (me, "/users/me")):
        rid = reply.headers["x-request-id"]
        assert rid in by_request and route in by_request[rid], (rid, by_request)
    assert "401" in by_request[wrong.headers["x-request-id"]]
    text = "\n".join(lines)
    for secret in (PASSWORD, token, SECRET_KEY, "hunter2"):
        assert secret not in text
    assert "Bearer [redacted]" in text and "rodeo:[redacted]@db" in text
