"""A/B experiments (learning-loop issue, item 7): sticky weighted assignment, results with
a two-proportion z-test on a seeded data set whose answer is worked out by hand, and the
admin API over the real chat path and the real database on both engines."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from server.db import AnswerMetric, Feedback, Review, User, make_engine, write_session
from server.learning.experiments import ExperimentIn, ExperimentService, VariantSpec, assign
from server.learning.stats import percentile, two_proportion_test
from server.main import create_app
from tests.conftest import MakeSettings, settings_for
from tests.helpers import sign_up
from tests.servers import copy_data

ASK = {"messages": [{"role": "user", "content": "How do I dally safely?"}]}


def test_assignment_is_sticky_and_follows_the_weights_over_ten_thousand_askers() -> None:
    for weights in ((70, 30), (50, 30, 20)):
        specs = [VariantSpec(name=f"v{i}", weight=w) for i, w in enumerate(weights)]
        subjects = [f"user:{n}" for n in range(10_000)]
        shares = Counter(assign(7, s, specs).name for s in subjects)
        for i, weight in enumerate(weights):
            assert abs(shares[f"v{i}"] / 100 - weight * 100 / sum(weights)) <= 3, shares
        assert all(assign(7, s, specs).name == assign(7, s, specs).name for s in subjects[:500])
    # another experiment deals the askers again rather than reusing the same split
    specs = [VariantSpec(name="a"), VariantSpec(name="b")]
    moved = sum(assign(1, s, specs).name != assign(2, s, specs).name for s in subjects)
    assert 4000 < moved < 6000


def test_variant_specs_refuse_what_cannot_run() -> None:
    for bad in ({"name": "x", "backend": "gpt5"}, {"name": "x", "model": "ft:1"}, {"name": "a b"}):
        with pytest.raises(ValueError):
            VariantSpec.model_validate(bad)
    with pytest.raises(ValueError, match="differ"):
        ExperimentIn(name="e", variants=[VariantSpec(name="a"), VariantSpec(name="a")])


def test_the_z_test_matches_a_hand_worked_case() -> None:
    # 20/40 against 32/40: pooled 0.65, se = sqrt(0.65 * 0.35 * (1/40 + 1/40)) = 0.106654
    test = two_proportion_test(20, 40, 32, 40)
    assert test["z"] == pytest.approx(0.3 / math.sqrt(0.65 * 0.35 / 20), abs=1e-3)
    assert test["p_value"] == pytest.approx(0.00491, abs=2e-4)
    assert two_proportion_test(20, 40, 20, 40)["p_value"] == 1.0
    assert not two_proportion_test(2, 4, 3, 4)["enough_data"]
    assert percentile([10, 20, 30, 40], 50) == 25.0 and percentile([], 95) is None


def _seed_arm(
    session: Any, experiment_id: int, name: str, ups: int, downs: int, unrated: int
) -> list[int]:
    ids = []
    for n in range(ups + downs + unrated):
        row = AnswerMetric(
            question=f"q{n}",
            response="r",
            chunks_used=1,
            model="m",
            backend="extractive",
            skill_level="beginner",
            latency_ms=100 * (n + 1),
            time_to_first_token_ms=10 * (n + 1),
            experiment_id=experiment_id,
            variant=name,
        )
        session.add(row)
        session.flush()
        assert row.id is not None
        ids.append(row.id)
        if n < ups + downs:
            session.add(Feedback(answer_id=row.id, rating="up" if n < ups else "down"))
    return ids


def test_results_on_a_seeded_experiment_give_the_known_answer(make_settings: MakeSettings) -> None:
    engine = make_engine(make_settings().engine_url)
    service = ExperimentService(engine)
    body = ExperimentIn(name="tone", variants=[VariantSpec(name="A"), VariantSpec(name="B")])
    experiment = service.create(body)
    with write_session(engine) as session:
        expert = User(email="vet@example.com", password_hash="x", role="expert")
        session.add(expert)
        session.flush()
        a = _seed_arm(session, experiment["id"], "A", ups=20, downs=20, unrated=10)
        b = _seed_arm(session, experiment["id"], "B", ups=32, downs=8, unrated=0)
        # not counted: an aborted answer, and an answer outside the experiment
        _seed_arm(session, experiment["id"], "B", ups=1, downs=0, unrated=0)
        session.exec(
            select(AnswerMetric).where(AnswerMetric.id == max(b) + 1)
        ).one().status = "aborted"
        _seed_arm(session, experiment["id"] + 1, "A", ups=5, downs=0, unrated=0)
        for answer_id, rating in ((a[0], 1), (a[0], 3), (a[1], 5), (b[0], 4)):
            session.add(Review(answer_id=answer_id, reviewer_id=expert.id, rating=rating))
            session.flush()

    results = service.results(experiment["id"])
    arm_a, arm_b = results["variants"]
    assert (arm_a["answers"], arm_a["rated"], arm_a["thumbs_up"]) == (50, 40, 20)
    assert (arm_b["answers"], arm_b["rated"], arm_b["thumbs_up"]) == (40, 40, 32)
    assert (arm_a["thumbs_up_rate"], arm_b["thumbs_up_rate"]) == (0.5, 0.8)
    assert arm_a["mean_expert_rating"] == 4.0  # a[0]'s newer review (3) replaced its 1
    assert arm_b["mean_expert_rating"] == 4.0 and arm_b["expert_reviews"] == 1
    assert arm_a["latency_ms"] == {"p50": 2550.0, "p95": 4755.0}
    assert arm_b["time_to_first_token_ms"]["p50"] == 205.0
    (comparison,) = results["comparisons"]
    assert comparison["p_value"] == pytest.approx(0.00491, abs=2e-4)
    assert comparison["verdict"].startswith("B does better than A: 80% thumbs-up against 50%")


@pytest.fixture(scope="module")
def api(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    data = copy_data(shared_data, tmp_path_factory.mktemp("experiments") / "data")
    with TestClient(
        create_app(settings_for(data, backends="extractive")), raise_server_exceptions=False
    ) as client:
        yield client


def _admin(api: TestClient) -> dict[str, str]:
    headers = sign_up(api, "boss@example.com")
    accounts = api.app.state.components.accounts  # type: ignore[attr-defined]
    accounts.admin_update(accounts.find_by_email("boss@example.com").id, role="admin")
    return headers


def test_admins_run_an_experiment_over_the_real_chat_path(api: TestClient) -> None:
    admin, url = _admin(api), "/api/admin/experiments"
    variants = [{"name": "control"}, {"name": "tight", "top_k": 1, "retrieval": "lexical"}]
    for bad in (variants[:1], [*variants, {"name": "control"}], [{"name": "x", "top_k": 0}]):
        refused = api.post(url, json={"name": "e", "variants": bad}, headers=admin)
        assert refused.status_code == 422 and refused.json()["error"]["code"] == "validation_error"
    roper = sign_up(api, "roper@example.com")
    assert api.post(url, json={"name": "e", "variants": variants}, headers=roper).status_code == 403
    started = api.post(url, json={"name": "top-k", "variants": variants}, headers=admin)
    assert started.status_code == 201, started.text
    experiment = started.json()
    again = api.post(url, json={"name": "second", "variants": variants}, headers=admin)
    assert again.status_code == 409 and again.json()["error"]["code"] == "experiment_running"

    specs = [VariantSpec.model_validate(v) for v in variants]
    seen: dict[str, int] = {}
    for n in range(12):  # until both variants have answered someone
        headers = sign_up(api, f"asker{n}@example.com")
        answer = api.post("/api/chat", json=ASK, headers=headers).json()
        user_id = api.get("/api/users/me", headers=headers).json()["id"]
        expected = assign(experiment["id"], f"user:{user_id}", specs).name
        with write_session(api.app.state.components.engine) as session:  # type: ignore[attr-defined]
            record = session.get(AnswerMetric, answer["answer_id"])
            assert record is not None
            assert (record.experiment_id, record.variant) == (experiment["id"], expected)
        assert (answer["chunks_used"] == 1) == (expected == "tight")
        seen[expected] = seen.get(expected, 0) + 1
        if len(seen) == 2 and n >= 3:
            break
    assert set(seen) == {"control", "tight"}

    results = api.get(f"{url}/{experiment['id']}/results", headers=admin).json()
    assert {v["name"]: v["answers"] for v in results["variants"]} == seen
    assert api.get(f"{url}/999999/results", headers=admin).status_code == 404
    wrong = api.post(f"{url}/{experiment['id']}/promote", json={"variant": "nope"}, headers=admin)
    assert wrong.status_code == 422 and wrong.json()["error"]["code"] == "unknown_variant"
    promote = f"{url}/{experiment['id']}/promote"
    promoted = api.post(promote, json={"variant": "tight"}, headers=admin)
    assert promoted.json()["status"] == "stopped" and promoted.json()["winner"] == "tight"
    # the winner now answers everyone, outside any experiment
    after = api.post("/api/chat", json=ASK, headers=roper).json()
    assert after["chunks_used"] == 1
    with write_session(api.app.state.components.engine) as session:  # type: ignore[attr-defined]
        record = session.get(AnswerMetric, after["answer_id"])
        assert record is not None and (record.experiment_id, record.variant) == (None, None)
    assert api.post(f"{url}/{experiment['id']}/stop", headers=admin).status_code == 200
    listed = api.get(url, headers=admin).json()
    assert [e["id"] for e in listed] == [experiment["id"]]
