"""The HTTP API end to end: cited answers, search, health, docs, and one error envelope."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from server.main import create_app
from tests.conftest import MakeSettings

QUESTION = "What rope length should a beginner header use?"


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    assert "Traceback" not in response.text
    assert body["error"]["request_id"] == response.headers["x-request-id"]
    return body["error"]


def test_chat_answers_the_beginner_rope_question_citing_knowledge(client: TestClient) -> None:
    response = client.post(
        "/api/chat",
        json={"messages": [{"role": "user", "content": QUESTION}], "skill_level": "beginner"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert {"response", "sources", "model", "backend", "latency_ms", "chunks_used"} <= set(body)
    assert body["backend"] in {"llamacpp", "extractive"}
    assert body["chunks_used"] == len(body["sources"]) >= 1
    cited = {int(n) for n in re.findall(r"\[(\d+)\]", body["response"])}
    assert cited, body["response"]
    assert cited <= {s["n"] for s in body["sources"]}
    cited_sources = {s["source"] for s in body["sources"] if s["n"] in cited}
    assert "knowledge/heading-rope-length-and-lay.md" in cited_sources
    assert all(s["cited"] == (s["n"] in cited) for s in body["sources"])
    assert "30-31" in body["response"]  # the evidence lines quote the source's figure


def test_chat_records_why_a_backend_was_skipped(client: TestClient) -> None:
    body = client.post(
        "/api/chat", json={"messages": [{"role": "user", "content": "How long is a bull ride?"}]}
    ).json()
    skipped = body["skipped_backends"]
    if body["backend"] == "extractive":
        assert skipped and skipped[0]["reason"]
    else:  # the model answered: only the sentences the support check dropped are listed
        assert all(s["reason"].startswith("dropped '") for s in skipped), skipped


def test_search_returns_hits_with_locations(client: TestClient) -> None:
    hits = client.get("/api/search", params={"q": "knocked barrel penalty", "k": 3}).json()
    assert len(hits) == 3
    assert set(hits[0]) == {"source", "title", "chunk_id", "score", "text", "location"}
    assert hits[0]["score"] >= hits[-1]["score"]
    assert any("barrel" in h["source"] for h in hits)


def test_health_reports_models_and_counts(client: TestClient) -> None:
    health = client.get("/health").json()
    assert health["status"] == "ok"
    assert health["documents"] >= 30
    assert health["chunks"] == health["index"]["vectors"] > 0
    assert health["models"]["embedder"]["name"] == "all-MiniLM-L6-v2"
    assert [b["backend"] for b in health["models"]["backends"]] == ["llamacpp", "extractive"]


def test_openapi_and_docs_are_served_without_a_cdn(client: TestClient) -> None:
    """The browser test (tests/web) proves /docs renders; this one that nothing is remote."""
    schema = client.get("/openapi.json").json()
    assert {"/api/chat", "/api/search", "/health"} <= set(schema["paths"])
    assert not any(path.startswith(("/sign-", "/web/", "/static")) for path in schema["paths"])
    docs = client.get("/docs")
    assert "unsafe-inline" not in docs.headers["content-security-policy"]
    scripts = re.findall(r'src="([^"]+)"', docs.text)
    assert scripts and all(src.startswith("/static/web/") for src in scripts)
    assert all(client.get(src).status_code == 200 for src in scripts)


def test_security_headers_are_set(client: TestClient) -> None:
    headers = client.get("/health").headers
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert "unsafe-inline" not in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ({"messages": [{"role": "user", "content": "   "}]}, "empty_question"),
        ({"messages": [{"role": "user", "content": "rope " * 2000}]}, "question_too_long"),
        ({"messages": [{"role": "assistant", "content": "hi"}]}, "no_question"),
        ({"messages": []}, "validation_error"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "validation_error"),
        (
            {"messages": [{"role": "user", "content": "hi"}], "skill_level": "guru"},
            "validation_error",
        ),
        ({"question": "missing messages"}, "validation_error"),
    ],
)
def test_bad_chat_input_gets_the_error_envelope(
    client: TestClient, payload: dict, code: str
) -> None:
    assert_error(client.post("/api/chat", json=payload), 422, code)


def test_malformed_json_and_unknown_routes_get_the_error_envelope(client: TestClient) -> None:
    assert_error(
        client.post(
            "/api/chat", content=b"{not json", headers={"content-type": "application/json"}
        ),
        422,
        "validation_error",
    )
    assert_error(client.get("/api/nothing-here"), 404, "not_found")
    assert_error(client.delete("/health"), 405, "method_not_allowed")
    assert_error(client.get("/api/search", params={"q": "rope", "k": 0}), 422, "validation_error")
    assert_error(client.get("/api/search", params={"q": "   "}), 422, "empty_query")


def test_oversized_body_is_rejected(client: TestClient) -> None:
    big = {"messages": [{"role": "user", "content": "x" * 1_100_000}]}
    assert_error(client.post("/api/chat", json=big), 413, "payload_too_large")


def test_empty_knowledge_base_is_a_clear_503(make_settings: MakeSettings) -> None:
    with TestClient(create_app(make_settings())) as empty:
        error = assert_error(
            empty.post("/api/chat", json={"messages": [{"role": "user", "content": QUESTION}]}),
            503,
            "index_empty",
        )
        assert "rodeoai ingest" in error["message"]
        assert_error(empty.get("/api/search", params={"q": "rope"}), 503, "index_empty")
        assert empty.get("/health").json()["status"] == "degraded"
