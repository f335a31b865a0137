"""GET /ready: readiness for a load balancer. 200 only when the database answers, its schema
is current, the models are loaded and the index matches; otherwise 503 naming what is not."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import text

from server.config import Settings
from server.db import head_revision
from server.main import create_app


def test_a_loaded_box_is_ready(kb_settings: Settings) -> None:
    with TestClient(create_app(kb_settings)) as client:
        reply = client.get("/ready")
    assert reply.status_code == 200, reply.text
    assert reply.json() == {
        "ready": True,
        "checks": {"database": "ok", "migrations": "ok", "models": "ok", "index": "ok"},
        "vector_store": "faiss",
    }


def test_a_box_still_starting_is_not_ready_and_says_why(kb_settings: Settings) -> None:
    client = TestClient(create_app(kb_settings))  # no lifespan: nothing has loaded yet
    reply = client.get("/ready")
    assert reply.status_code == 503 and reply.headers["retry-after"] == "5"
    error = reply.json()["error"]
    assert error["code"] == "not_ready" and "models starting" in error["message"]
    assert error["details"]["database"] == "ok" and error["details"]["models"] == "starting"
    assert client.get("/health").status_code == 200  # alive all the same


def test_a_schema_behind_the_release_is_not_ready(kb_settings: Settings) -> None:
    app = create_app(kb_settings)
    with TestClient(app) as client:
        engine = app.state.components.engine
        with engine.begin() as connection:
            connection.execute(text("UPDATE alembic_version SET version_num = '0005'"))
        reply = client.get("/ready")
    assert reply.status_code == 503
    details = reply.json()["error"]["details"]
    assert details["migrations"] == f"at 0005, {head_revision()} expected"
    assert details["models"] == "ok"
