"""The database layer behaves the same on SQLite and PostgreSQL (run the suite with
`--database postgresql` for the second): the largest valid id finds nothing rather than
failing, NUL characters are refused as bad input, writers take turns, and the URL is
shown without its password."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from server.config import Settings
from server.db import make_engine, safe_url, write_session
from server.main import create_app
from tests.conftest import MakeSettings
from tests.helpers import PASSWORD, sign_up

LARGEST_ID = 2**63 - 1


@pytest.fixture
def settings(make_settings: MakeSettings) -> Settings:
    return make_settings(backends="extractive")


@pytest.fixture
def api(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def test_the_largest_valid_id_is_simply_not_found(api: TestClient) -> None:
    headers = sign_up(api, "ids@example.com")
    for method, path in [
        ("GET", f"/api/conversations/{LARGEST_ID}"),
        ("PATCH", f"/api/conversations/{LARGEST_ID}"),
        ("DELETE", f"/api/conversations/{LARGEST_ID}"),
        ("DELETE", f"/api/users/me/api-keys/{LARGEST_ID}"),
    ]:
        body = {"title": "x"} if method == "PATCH" else None
        reply = api.request(method, path, headers=headers, json=body)
        assert reply.status_code == 404, (path, reply.text)
        assert reply.json()["error"]["code"] == "not_found"


def test_nul_characters_are_refused_as_bad_input_and_nothing_is_stored(
    api: TestClient,
) -> None:
    nul_email = {"email": "nul\u0000@example.com", "password": PASSWORD}
    for path in ("/api/auth/login", "/api/auth/register"):
        reply = api.post(path, json=nul_email)
        assert reply.status_code == 422, reply.text
        assert reply.json()["error"]["code"] in {"nul_character", "validation_error"}
    headers = sign_up(api, "named@example.com")
    renamed = api.patch("/api/users/me", json={"display_name": "Al\u0000"}, headers=headers)
    assert renamed.status_code == 422 and renamed.json()["error"]["code"] == "nul_character"
    me = api.get("/api/users/me", headers=headers).json()
    assert me["display_name"] == ""  # the refused write left nothing behind


def test_writers_take_turns(settings: Settings) -> None:
    """A second writer enters only after the first has committed: BEGIN IMMEDIATE on
    SQLite, the advisory lock on PostgreSQL."""
    engine = make_engine(settings.engine_url)
    order: list[str] = []
    holding = threading.Event()

    def first() -> None:
        with write_session(engine) as session:
            session.execute(text("UPDATE meta SET value = value WHERE key = 'none'"))
            holding.set()
            time.sleep(0.5)  # long enough for a writer that does not wait to barge in
            order.append("first commits")

    def second() -> None:
        holding.wait()
        with write_session(engine):
            order.append("second enters")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert order == ["first commits", "second enters"]
    engine.dispose()


def test_the_database_url_is_shown_without_its_password() -> None:
    shown = safe_url("postgresql+psycopg://rodeo:s3cret@db.example:5432/rodeoai")
    assert "s3cret" not in shown and "db.example:5432/rodeoai" in shown
    assert safe_url("sqlite:////srv/rodeo/rodeoai.db") == "/srv/rodeo/rodeoai.db"
