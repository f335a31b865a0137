"""GET /metrics: scraped after real traffic through the app (questions on the bundled models,
an upload, failovers, a queued question), parsed with prometheus_client's own parser; each
series must exist and must have moved by exactly what the traffic did."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from server.components import Components
from server.config import Settings
from server.db import counts
from server.http.metrics import Metrics
from server.main import create_app
from tests.conftest import settings_for
from tests.helpers import PASSWORD, bearer, model_held, sign_up, sse_events
from tests.servers import copy_data, free_port

# Counters fed by the same services whose database work other tests check on both engines.
pytestmark = pytest.mark.one_pass

QUESTIONS = (
    "What rope length should a beginner header use?",
    "What is the penalty for a knocked barrel?",
    "How long is a bull ride?",
)
DOC = b"# Sandy Flats Jackpot\n\nThe Sandy Flats jackpot pays three holes and starts at one.\n"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class Scrape:
    def __init__(self, text: str) -> None:
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples: Samples = {
            (s.name, frozenset(s.labels.items())): s.value
            for family in self.families.values()
            for s in family.samples
        }

    def value(self, name: str, **labels: str) -> float:
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def has(self, name: str, **labels: str) -> bool:
        return (name, frozenset(labels.items())) in self.samples

    def labels_of(self, name: str) -> list[dict[str, str]]:
        return [dict(labels) for sample, labels in self.samples if sample == name]


def scrape(client: TestClient, **headers: str) -> Scrape:
    reply = client.get("/metrics", headers=headers)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    return Scrape(reply.text)


def ask(client: TestClient, question: str) -> dict[str, Any]:
    reply = client.post("/api/chat", json={"messages": [{"role": "user", "content": question}]})
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    return body


@pytest.fixture(scope="module")
def extractive(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    data = copy_data(shared_data, tmp_path_factory.mktemp("metrics") / "data")
    with TestClient(create_app(settings_for(data, backends="extractive"))) as client:
        client.app.state.components.accounts.create_admin("boss@example.com", PASSWORD)  # type: ignore[attr-defined]
        yield client


def test_requests_answers_index_and_ingestion_move_with_the_traffic(
    extractive: TestClient,
) -> None:
    components: Components = extractive.app.state.components  # type: ignore[attr-defined]
    before = scrape(extractive)
    answers = [ask(extractive, q) for q in QUESTIONS]
    streamed = extractive.post(
        "/api/chat/stream", json={"messages": [{"role": "user", "content": QUESTIONS[0]}]}
    )
    assert streamed.status_code == 200
    last, streamed_answer = sse_events(streamed.text)[-1]
    assert last == "done"
    answers.append(streamed_answer)
    rider = sign_up(extractive, "rider@example.com")
    assert extractive.get("/api/conversations/987654", headers=rider).status_code == 404
    assert extractive.get("/no/such/page/4711").status_code == 404
    admin = sign_up(extractive, "boss@example.com")
    upload = extractive.post(
        "/api/admin/documents", headers=admin, files={"file": ("sandy-flats.md", DOC)}
    )
    assert upload.status_code == 200, upload.text
    summary = sse_events(upload.text)[-1][1]
    assert summary["added_documents"] == 1 and summary["added_chunks"] >= 1
    after = scrape(extractive)

    def moved(name: str, **labels: str) -> float:
        return after.value(name, **labels) - before.value(name, **labels)

    # Requests, by route template, method and status; latency to the end of the body.
    chat = {"route": "/api/chat", "method": "POST"}
    assert moved("rodeoai_http_requests_total", **chat, status="200") == 3
    assert moved("rodeoai_http_request_duration_seconds_count", **chat) == 3
    assert moved("rodeoai_http_request_duration_seconds_sum", **chat) > 0
    stream = {"route": "/api/chat/stream", "method": "POST"}
    assert moved("rodeoai_http_requests_total", **stream, status="200") == 1
    conversation = {"route": "/api/conversations/{conversation_id}", "method": "GET"}
    assert moved("rodeoai_http_requests_total", **conversation, status="404") == 1
    assert moved("rodeoai_http_requests_total", route="unmatched", method="GET", status="404") == 1
    upload_route = {"route": "/api/admin/documents", "method": "POST", "status": "200"}
    assert moved("rodeoai_http_requests_total", **upload_route) == 1
    routes = {labels["route"] for labels in after.labels_of("rodeoai_http_requests_total")}
    assert not any("987654" in r or "4711" in r for r in routes), routes  # templates only
    assert "/metrics" not in routes  # scrapes are not counted
    assert after.value("rodeoai_http_requests_in_progress") == 0

    # Answers by backend, time to first token, tokens per second, tokens generated.
    assert {a["backend"] for a in answers} == {"extractive"}
    done = {"backend": "extractive", "status": "done", "api": "chat"}
    assert moved("rodeoai_answers_total", **done) == 4
    first_token = "rodeoai_time_to_first_token_seconds"
    assert moved(f"{first_token}_count", backend="extractive") == 4
    ttft = sum(a["time_to_first_token_ms"] for a in answers) / 1000
    assert moved(f"{first_token}_sum", backend="extractive") == pytest.approx(ttft)
    assert moved("rodeoai_tokens_per_second_count", backend="extractive") >= 1
    generated = moved("rodeoai_generated_tokens_total", backend="extractive")
    assert generated == sum(a["tokens_out"] for a in answers) > 0
    assert moved("rodeoai_failovers_total", backend="extractive", reason="error") == 0

    # Ingestion counts, and the index and knowledge base as they are now.
    assert moved("rodeoai_ingested_documents_total", outcome="added") == 1
    assert moved("rodeoai_ingested_documents_total", outcome="skipped") == 0
    assert moved("rodeoai_ingested_chunks_total", outcome="added") == summary["added_chunks"]
    documents, chunks = counts(components.engine)
    assert after.value("rodeoai_index_vectors") == components.index.count == chunks
    assert moved("rodeoai_index_vectors") == summary["added_chunks"]
    assert after.value("rodeoai_index_generation") == components.index.generation
    assert moved("rodeoai_index_generation") >= 1
    assert after.value("rodeoai_knowledge_documents") == documents
    assert moved("rodeoai_knowledge_documents") == 1
    assert after.value("rodeoai_knowledge_chunks") == chunks
    assert after.value("rodeoai_ready") == 1
    assert after.has("rodeoai_build_info", version=__import__("server").__version__)

    # Every family has its help text and the rodeoai_ prefix; counters end in _total.
    for name, family in after.families.items():
        if name.startswith(("python_", "process_")):
            continue
        assert name.startswith("rodeoai_") and family.documentation, name
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples), name


def test_a_real_model_answer_moves_first_token_and_speed_and_a_waiting_question_the_queue(
    shared_data: Path, tmp_path: Path
) -> None:
    settings = settings_for(
        copy_data(shared_data, tmp_path / "data"), grounding_check=False, llm_slots=1
    )
    with TestClient(create_app(settings)) as client:
        before = scrape(client)
        assert before.value("rodeoai_llm_slots", backend="llamacpp") == 1
        assert before.value("rodeoai_llm_queue_depth", backend="llamacpp") == 0
        answer = ask(client, QUESTIONS[1])
        after = scrape(client)
        backend = answer["backend"]  # llamacpp, unless it said nothing of substance
        assert backend in {"llamacpp", "extractive"}
        done = {"backend": backend, "status": "done", "api": "chat"}
        assert (
            after.value("rodeoai_answers_total", **done)
            - before.value("rodeoai_answers_total", **done)
            == 1
        )
        ttft = answer["time_to_first_token_ms"] / 1000
        assert after.value("rodeoai_time_to_first_token_seconds_count", backend=backend) == 1
        assert after.value("rodeoai_time_to_first_token_seconds_sum", backend=backend) == ttft
        speed = answer["tokens_out"] / (
            (answer["latency_ms"] - answer["time_to_first_token_ms"]) / 1000
        )
        assert after.value("rodeoai_tokens_per_second_count", backend=backend) == 1
        assert after.value("rodeoai_tokens_per_second_sum", backend=backend) == pytest.approx(speed)
        assert (
            after.value("rodeoai_generated_tokens_total", backend=backend) == answer["tokens_out"]
        )

        # A question that finds the only slot taken waits in the queue, and the gauge says so.
        llamacpp = next(
            b for b in client.app.state.components.chain.backends if b.name == "llamacpp"
        )  # type: ignore[attr-defined]
        replies: list[int] = []
        waiting = threading.Thread(
            target=lambda: replies.append(
                client.post(
                    "/api/chat", json={"messages": [{"role": "user", "content": QUESTIONS[0]}]}
                ).status_code
            )
        )
        with model_held(llamacpp):  # a long generation holds the only slot
            waiting.start()
            deadline = time.monotonic() + 30
            while scrape(client).value("rodeoai_llm_queue_depth", backend="llamacpp") != 1:
                assert time.monotonic() < deadline, "the question never queued"
                time.sleep(0.05)
            queued = scrape(client)
            assert queued.value("rodeoai_llm_slots_busy", backend="llamacpp") == 1
            assert queued.value("rodeoai_http_requests_in_progress") == 1
        waiting.join(60)
        assert replies == [200]
        assert scrape(client).value("rodeoai_llm_queue_depth", backend="llamacpp") == 0


def test_failovers_are_counted_by_backend_and_reason(shared_data: Path, tmp_path: Path) -> None:
    # Guests are on the local plan, so the cloud backend is excluded; the Ollama server is
    # unreachable, so it fails, then cools down.
    settings = settings_for(
        copy_data(shared_data, tmp_path / "data"),
        backends="openai,ollama,extractive",
        openai_base_url=f"http://127.0.0.1:{free_port()}/v1",
        ollama_host=f"http://127.0.0.1:{free_port()}",
        backend_cooldown_s=300,
    )
    with TestClient(create_app(settings)) as client:
        first, second = ask(client, QUESTIONS[0]), ask(client, QUESTIONS[1])
        after = scrape(client)
    assert first["backend"] == second["backend"] == "extractive"
    assert [s["backend"] for s in first["skipped_backends"]] == ["openai", "ollama"]
    failovers = "rodeoai_failovers_total"
    assert after.value(failovers, backend="openai", reason="excluded") == 2
    assert after.value(failovers, backend="ollama", reason="error") == 1
    assert after.value(failovers, backend="ollama", reason="cooling_down") == 1
    assert len(after.labels_of(failovers)) == 3
    assert (
        after.value("rodeoai_answers_total", backend="extractive", status="done", api="chat") == 2
    )
    assert after.labels_of("rodeoai_llm_queue_depth") == []  # remote backends have no queue


def test_a_metrics_token_guards_the_scrape_with_the_one_error_shape(
    shared_data: Path, tmp_path: Path
) -> None:
    settings = settings_for(
        copy_data(shared_data, tmp_path / "data"),
        backends="extractive",
        metrics_token="s3cret-scrape",
    )
    with TestClient(create_app(settings)) as client:
        for headers in ({}, bearer("wrong"), {"Authorization": "s3cret-scrape"}):
            refused = client.get("/metrics", headers=headers)
            assert refused.status_code == 401
            error = refused.json()["error"]
            assert set(refused.json()) == {"error"} and error["code"] == "unauthorized"
            assert error["request_id"] == refused.headers["x-request-id"]
            assert refused.headers["www-authenticate"] == "Bearer"
        allowed = client.get("/metrics", headers=bearer("s3cret-scrape"))
        assert allowed.status_code == 200 and "rodeoai_ready 1.0" in allowed.text
        assert allowed.headers["x-content-type-options"] == "nosniff"  # the guard's headers
        assert "content-security-policy" in allowed.headers
        assert "/metrics" not in client.get("/openapi.json").json()["paths"]


def test_metrics_can_be_turned_off(make_settings: Any) -> None:
    settings: Settings = make_settings(backends="extractive", metrics_enabled=False)
    with TestClient(create_app(settings)) as client:
        assert client.get("/metrics").status_code == 404
        assert not hasattr(client.app.state, "metrics")  # type: ignore[attr-defined]


def test_a_scrape_never_loads_the_index_models_or_database(make_settings: Any) -> None:
    components = Components(make_settings(backends="extractive"))
    families = Scrape(Metrics(components).exposition().decode())
    assert families.value("rodeoai_ready") == 0
    assert not families.has("rodeoai_index_vectors") and not families.has(
        "rodeoai_knowledge_chunks"
    )
    assert {"index", "engine", "chain", "embedder"}.isdisjoint(components.__dict__)


def test_apps_in_one_process_keep_their_own_numbers(
    extractive: TestClient, make_settings: Any
) -> None:
    ask(extractive, QUESTIONS[2])  # traffic on the other app
    with TestClient(create_app(make_settings(backends="extractive"))) as other:
        assert other.get("/health").status_code == 200
        mine = scrape(other)
    assert (
        mine.value("rodeoai_http_requests_total", route="/health", method="GET", status="200") == 1
    )
    assert mine.value("rodeoai_answers_total", backend="extractive", status="done", api="chat") == 0
