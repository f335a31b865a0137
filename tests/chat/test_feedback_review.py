"""Feedback on answers and the expert review queue (learning-loop issue, items 2 and 3),
over the real chat path and the real database on both engines."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from server.db import AnswerMetric, Feedback, Review, utcnow, write_session
from server.main import create_app
from tests.conftest import settings_for
from tests.helpers import sign_up
from tests.servers import copy_data

ASK = {"messages": [{"role": "user", "content": "What is a dally?"}]}


@pytest.fixture(scope="module")
def api(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """One app for the file (each test uses its own accounts); starting one per test cost
    more than the tests themselves."""
    data = copy_data(shared_data, tmp_path_factory.mktemp("learning") / "data")
    with TestClient(
        create_app(settings_for(data, backends="extractive")), raise_server_exceptions=False
    ) as client:
        yield client


def components(api: TestClient) -> Any:
    return api.app.state.components  # type: ignore[attr-defined]


def expert(api: TestClient, email: str, role: str = "expert") -> dict[str, str]:
    headers = sign_up(api, email)
    accounts = components(api).accounts
    accounts.admin_update(accounts.find_by_email(email).id, role=role)
    return headers


def test_only_the_asker_rates_and_rating_again_replaces(api: TestClient) -> None:
    owner = sign_up(api, "owner@example.com")
    other = sign_up(api, "other@example.com")
    answer = api.post("/api/chat", json=ASK, headers=owner).json()
    assert answer["feedback_token"] is None  # accounts rate by account
    url = f"/api/answers/{answer['answer_id']}/feedback"

    for stranger in (other, {}):
        refused = api.post(url, json={"rating": "down"}, headers=stranger)
        assert refused.status_code == 404 and refused.json()["error"]["code"] == "not_found"
    first = api.post(url, json={"rating": "up", "tags": ["clear"]}, headers=owner)
    assert first.status_code == 200 and first.json()["rating"] == "up"
    again = api.post(url, json={"rating": "down", "comment": "too short"}, headers=owner)
    assert again.json() == {
        "answer_id": answer["answer_id"],
        "rating": "down",
        "comment": "too short",
        "tags": [],
    }
    with write_session(components(api).engine) as session:
        rows = session.exec(select(Feedback).where(Feedback.answer_id == answer["answer_id"])).all()
    assert len(rows) == 1 and rows[0].rating == "down"
    missing = api.post("/api/answers/999999/feedback", json={"rating": "up"}, headers=owner)
    assert missing.status_code == 404
    bad = api.post(url, json={"rating": "meh"}, headers=owner)
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "validation_error"


def test_a_guest_rates_with_the_token_of_that_answer_only(api: TestClient) -> None:
    first = api.post("/api/chat", json=ASK).json()
    second = api.post("/api/chat", json=ASK).json()
    token = first["feedback_token"]
    assert token and token != second["feedback_token"]
    url = f"/api/answers/{first['answer_id']}/feedback"
    assert api.post(url, json={"rating": "up"}).status_code == 404
    wrong = {"rating": "up", "feedback_token": second["feedback_token"]}
    assert api.post(url, json=wrong).status_code == 404
    signed_in = sign_up(api, "nosy@example.com")
    assert api.post(url, json={"rating": "up"}, headers=signed_in).status_code == 404
    ok = api.post(url, json={"rating": "down", "feedback_token": token, "comment": "wrong"})
    assert ok.status_code == 200 and ok.json()["comment"] == "wrong"
    with write_session(components(api).engine) as session:
        record = session.get(AnswerMetric, first["answer_id"])
        assert record is not None and token not in (record.feedback_token_hash or "")


def _record(session: Any, question: str, score: float, age_days: int, **extra: Any) -> int:
    row = AnswerMetric(
        question=question,
        response=f"About {question}.",
        chunks_used=1,
        sources_json=json.dumps([{"n": 1, "source": "knowledge/x.md", "score": score}]),
        model="m",
        backend="extractive",
        skill_level="beginner",
        latency_ms=1,
        created_at=utcnow() - timedelta(days=age_days),
        **extra,
    )
    session.add(row)
    session.flush()
    assert row.id is not None
    return row.id


def test_the_queue_puts_thumbs_down_first_then_weak_retrieval_then_age(api: TestClient) -> None:
    with write_session(components(api).engine) as session:
        strong_old = _record(session, "strong old", 0.9, 9)
        strong_new = _record(session, "strong new", 0.9, 1)
        weak = _record(session, "weak", 0.1, 2)
        disliked = _record(session, "disliked", 0.95, 0)
        liked = _record(session, "liked", 0.05, 3)
        reviewed = _record(session, "reviewed", 0.0, 10)
        _record(session, "aborted", 0.0, 11, status="aborted")
        session.add(Feedback(answer_id=disliked, rating="down", comment="wrong"))
        session.add(Feedback(answer_id=liked, rating="up"))
    reviewer = expert(api, "judge@example.com")
    with write_session(components(api).engine) as session:
        judge = components(api).accounts.find_by_email("judge@example.com")
        session.add(Review(answer_id=reviewed, reviewer_id=judge.id, rating=5))

    queue = api.get("/api/review/queue", params={"limit": 200}, headers=reviewer).json()["items"]
    seeded = {strong_old, strong_new, weak, disliked, liked}
    order = [i["answer_id"] for i in queue if i["answer_id"] in seeded | {reviewed}]
    assert order == [disliked, liked, weak, strong_old, strong_new]
    first = next(i for i in queue if i["answer_id"] == disliked)
    assert first["feedback"] == {"rating": "down", "comment": "wrong", "tags": []}
    # answers other tests rated down come first too; none rated up or unrated comes before
    ahead = queue[: queue.index(first)]
    assert all(i["feedback"] and i["feedback"]["rating"] == "down" for i in ahead)
    assert "aborted" not in {i["question"] for i in queue}


def test_experts_review_answers_which_then_leave_the_queue(api: TestClient) -> None:
    answer = api.post("/api/chat", json=ASK).json()
    user = sign_up(api, "plain@example.com")
    assert api.get("/api/review/queue", headers=user).status_code == 403
    assert api.get("/api/review/queue").status_code == 401
    reviewer = expert(api, "vet@example.com")
    url = f"/api/review/{answer['answer_id']}"
    body = {"rating": 2, "corrected_answer": "Wrap the rope around the horn.", "note": "thin"}
    assert api.post(url, json={"rating": 6}, headers=reviewer).status_code == 422
    assert api.post(url, json=body, headers=user).status_code == 403
    saved = api.post(url, json=body, headers=reviewer)
    assert saved.status_code == 200, saved.text
    assert saved.json()["corrected_answer"] == body["corrected_answer"]
    queue = api.get("/api/review/queue", params={"limit": 200}, headers=reviewer).json()["items"]
    assert answer["answer_id"] not in {i["answer_id"] for i in queue}
    assert api.post("/api/review/999999", json=body, headers=reviewer).status_code == 404

    admin = expert(api, "head@example.com", role="admin")
    assert api.get("/api/admin/review-activity", headers=reviewer).status_code == 403
    activity = api.get("/api/admin/review-activity", headers=admin).json()
    assert ("vet@example.com", 1) in [(a["reviewer"], a["reviews"]) for a in activity]


def test_a_user_deletes_their_recorded_answers_and_no_one_elses(api: TestClient) -> None:
    mine = sign_up(api, "private@example.com")
    theirs = sign_up(api, "neighbour@example.com")
    own = [api.post("/api/chat", json=ASK, headers=mine).json()["answer_id"] for _ in range(2)]
    kept = api.post("/api/chat", json=ASK, headers=theirs).json()["answer_id"]
    url = f"/api/answers/{own[0]}/feedback"
    assert api.post(url, json={"rating": "up"}, headers=mine).status_code == 200
    assert api.delete("/api/users/me/answers").status_code == 401
    gone = api.delete("/api/users/me/answers", headers=mine)
    assert gone.status_code == 200 and gone.json() == {"deleted": 2}
    with write_session(components(api).engine) as session:
        assert all(session.get(AnswerMetric, i) is None for i in own)
        assert session.get(AnswerMetric, kept) is not None
        assert not session.exec(select(Feedback).where(Feedback.answer_id == own[0])).all()
    assert api.delete("/api/users/me/answers", headers=mine).json() == {"deleted": 0}
    assert api.post(url, json={"rating": "down"}, headers=mine).status_code == 404
