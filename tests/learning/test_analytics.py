"""Admin analytics and the knowledge-gap report (learning-loop issue, item 8): numbers on a
seeded data set whose answers are worked out by hand, the gap report ranking the seeded
weak questions first, the API's bounds and roles, and `rodeoai report` with and without
--json, on both engines."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from server.cli import app as cli
from server.db import AnswerMetric, Experiment, Feedback, Review, User, make_engine, write_session
from server.errors import InvalidInput
from server.learning import analytics
from server.learning.analytics import NO_FACTS, AnalyticsService, significant_words, weak_score
from server.main import create_app
from tests import databases
from tests.conftest import MakeSettings
from tests.helpers import sign_up

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
GOOD = 2 / 61  # first in both the dense and the lexical ranking
DENSE_ONLY = 1 / 61  # first in the dense ranking, no lexical match at all


def _source(score: float, source: str = "knowledge/bull-riding.md") -> dict[str, Any]:
    return {"n": 1, "source": source, "title": "Bull Riding", "score": round(score, 6)}


def _add(
    session: Any,
    when: datetime,
    *,
    backend: str = "llamacpp",
    skill: str = "beginner",
    latency: int = 100,
    first_token: int | None = None,
    question: str = "How is bull riding scored?",
    sources: list[dict[str, Any]] | None = None,
    response: str = "An answer [1].",
    status: str = "done",
    rating: str | None = None,
    experiment: tuple[int, str] | None = None,
) -> int:
    row = AnswerMetric(
        question=question,
        response=response,
        chunks_used=len(sources or []),
        sources_json=json.dumps([_source(GOOD)] if sources is None else sources),
        model="m",
        backend=backend,
        skill_level=skill,
        latency_ms=latency,
        time_to_first_token_ms=first_token,
        created_at=when,
        status=status,
        experiment_id=experiment[0] if experiment else None,
        variant=experiment[1] if experiment else None,
    )
    session.add(row)
    session.flush()
    assert row.id is not None
    if rating:
        session.add(Feedback(answer_id=row.id, rating=rating))
    return row.id


def _seed(engine: Any, now: datetime) -> dict[str, int]:
    """Eleven answers over three UTC days, and two outside the window.

    day 0 (today): 1 up, 2 up, 3 down (decent bull-riding match), 4 mutton busting (no
    source, extractive found no facts, down), 11 rope a calf (score 0.02, weak).
    day -1: 5 mutton busting (dense only, expert gap), 6 up, 7 aborted.
    day -2: 8 mutton busting (dense only, up), 9 unrated, 10 failed."""
    today = datetime(now.year, now.month, now.day, tzinfo=UTC)
    d0, d1, d2 = (
        today + timedelta(minutes=30),
        today - timedelta(hours=12),
        today - timedelta(hours=36),
    )
    ids: dict[str, int] = {}
    with write_session(engine) as session:
        expert = User(email="vet@example.com", password_hash="x", role="expert")
        session.add(expert)
        session.flush()
        assert expert.id is not None
        ids["1"] = _add(session, d0, latency=100, first_token=10, rating="up")
        ids["2"] = _add(session, d0, latency=200, first_token=20, rating="up")
        ids["3"] = _add(
            session,
            d0,
            skill="intermediate",
            latency=300,
            first_token=30,
            question="Why do bull riders get a reride?",
            rating="down",
        )
        ids["4"] = _add(
            session,
            d0,
            backend="extractive",
            latency=400,
            question="How do I start mutton busting with my kid?",
            sources=[],
            response=NO_FACTS,
            rating="down",
        )
        ids["11"] = _add(
            session,
            d0,
            skill="advanced",
            latency=900,
            first_token=110,
            question="How do I rope a calf from a four wheeler?",
            sources=[_source(0.02, "knowledge/tie-down-roping.md")],
        )
        ids["5"] = _add(
            session,
            d1,
            backend="extractive",
            skill="intermediate",
            latency=500,
            question="What age can kids try mutton busting?",
            sources=[_source(DENSE_ONLY, "knowledge/rodeo-events-overview.md")],
        )
        ids["6"] = _add(session, d1, skill="advanced", latency=600, first_token=60, rating="up")
        ids["7"] = _add(session, d1, latency=50, status="aborted", question="mutton busting?")
        ids["8"] = _add(
            session,
            d2,
            backend="extractive",
            latency=700,
            question="Mutton busting helmet and vest rules?",
            sources=[_source(DENSE_ONLY, "knowledge/rodeo-glossary.md")],
            rating="up",
        )
        ids["9"] = _add(session, d2, latency=800, first_token=90)
        ids["10"] = _add(session, d2, backend="extractive", latency=5, status="failed")
        # outside the window: the day before, and a weak question the report must not see
        _add(session, today - timedelta(days=2, seconds=1), question="Mutton busting sheep?")
        _add(session, today - timedelta(days=3), sources=[], rating="down", question="goats?")
        for answer_id, gap in ((ids["5"], "No mutton busting guide at all"), (ids["6"], None)):
            session.add(
                Review(answer_id=answer_id, reviewer_id=expert.id, rating=2, knowledge_gap=gap)
            )
    return ids


def test_the_weak_threshold_sits_between_off_topic_and_in_domain_scores() -> None:
    assert weak_score() == pytest.approx(2 / 81) and weak_score(60, 1) == pytest.approx(1 / 81)
    assert DENSE_ONLY < weak_score() < 0.0292  # the lowest in-domain question measured
    assert significant_words("What age can kids try mutton busting?") == [
        "age",
        "kid",
        "mutton",
        "busting",
    ]


def test_analytics_on_a_seeded_data_set_give_the_numbers_worked_out_by_hand(
    make_settings: MakeSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = make_engine(make_settings().engine_url)
    _seed(engine, NOW)
    report = AnalyticsService(engine).report(3, now=NOW)

    assert report["since"] == datetime(2026, 3, 8, tzinfo=UTC) and not report["truncated"]
    assert report["per_day"] == [
        {"date": "2026-03-08", "questions": 3, "done": 2, "aborted": 0, "failed": 1},
        {"date": "2026-03-09", "questions": 3, "done": 2, "aborted": 1, "failed": 0},
        {"date": "2026-03-10", "questions": 5, "done": 5, "aborted": 0, "failed": 0},
    ]
    totals = report["totals"]
    assert (totals["questions"], totals["done"], totals["rated"]) == (11, 9, 6)
    assert (totals["thumbs_up"], totals["thumbs_down"]) == (4, 2)
    assert totals["thumbs_up_rate"] == 0.6667 and totals["feedback_rate"] == 0.6667
    # finished latencies 100..900: p50 the 5th; p95 at rank 7.6 = 800 + 0.6 * 100
    latency = report["latency"]
    assert latency["latency_ms"] == {"p50": 500.0, "p95": 860.0}
    assert latency["p99_latency_ms"] == 892.0
    # first tokens 10, 20, 30, 60, 90, 110: p50 at rank 2.5, p95 at rank 4.75
    assert latency["time_to_first_token_ms"] == {"p50": 45.0, "p95": 105.0}

    llama, extractive = report["by_backend"]
    assert llama["backend"] == "llamacpp" and extractive["backend"] == "extractive"
    assert (llama["answers"], llama["rated"], llama["thumbs_up"]) == (6, 4, 3)
    assert llama["thumbs_up_rate"] == 0.75
    assert llama["latency_ms"] == {"p50": 450.0, "p95": 875.0}  # 100 200 300 600 800 900
    assert (extractive["answers"], extractive["rated"], extractive["thumbs_up"]) == (3, 2, 1)
    assert extractive["thumbs_up_rate"] == 0.5
    assert extractive["latency_ms"] == {"p50": 500.0, "p95": 680.0}  # 400 500 700

    skills = {s["skill_level"]: s for s in report["by_skill_level"]}
    assert [s["skill_level"] for s in report["by_skill_level"]] == [
        "beginner",
        "advanced",
        "intermediate",
    ]
    assert (skills["beginner"]["answers"], skills["beginner"]["rated"]) == (5, 4)
    assert skills["beginner"]["thumbs_up_rate"] == 0.75
    assert skills["intermediate"]["thumbs_up_rate"] == 0.0
    assert skills["advanced"]["thumbs_up_rate"] == 1.0
    assert skills["advanced"]["feedback_rate"] == 0.5

    one_day = AnalyticsService(engine).report(1, now=NOW)
    assert [d["questions"] for d in one_day["per_day"]] == [5]
    with pytest.raises(InvalidInput):
        AnalyticsService(engine).report(366, now=NOW)
    monkeypatch.setattr(analytics, "MAX_ROWS", 4)  # the newest four, and it says so
    capped = AnalyticsService(engine).report(3, now=NOW)
    assert capped["truncated"] and capped["totals"]["questions"] == 4
    engine.dispose()


def test_the_gap_report_ranks_the_seeded_weak_questions_first(
    make_settings: MakeSettings,
) -> None:
    engine = make_engine(make_settings().engine_url)
    ids = _seed(engine, NOW)
    gaps = AnalyticsService(engine).gaps(3, now=NOW)

    # the good answers are not gaps; neither are the aborted one nor those before the window
    assert gaps["gap_questions"] == 5
    assert [g["topic"] for g in gaps["groups"]] == ["mutton busting", "Bull Riding", "rope calf"]
    mutton, bulls, calf = gaps["groups"]
    # expert gap (3) + weak (1) for 5; thumbs-down (2) + weak for 4; weak for 8
    assert (mutton["need"], mutton["questions"]) == (8, 3)
    assert (mutton["expert_gaps"], mutton["thumbs_down"], mutton["weak"]) == (1, 1, 3)
    assert [e["answer_id"] for e in mutton["examples"]] == [ids["5"], ids["4"], ids["8"]]
    assert mutton["examples"][0]["reasons"] == ["expert_gap", "weak"]
    assert mutton["examples"][1]["reasons"] == ["thumbs_down", "weak"]
    assert mutton["notes"] == ["No mutton busting guide at all"]
    assert (mutton["suggested_file"], mutton["action"]) == ("knowledge/mutton-busting.md", "new")
    # a thumbs-down on an answer whose source matched well: extend that document
    assert (bulls["need"], bulls["thumbs_down"], bulls["weak"]) == (2, 1, 0)
    assert (bulls["suggested_file"], bulls["action"]) == ("knowledge/bull-riding.md", "extend")
    assert [e["answer_id"] for e in bulls["examples"]] == [ids["3"]]
    assert (calf["need"], calf["suggested_file"]) == (1, "knowledge/rope-calf.md")
    assert calf["examples"][0]["top_score"] == 0.02
    engine.dispose()


def test_a_single_ranking_variant_is_judged_on_its_own_scale(make_settings: MakeSettings) -> None:
    engine = make_engine(make_settings().engine_url)
    with write_session(engine) as session:
        variants = [{"name": "control"}, {"name": "lex", "retrieval": "lexical"}]
        experiment = Experiment(name="e", variants_json=json.dumps(variants))
        session.add(experiment)
        session.flush()
        assert experiment.id is not None
        top = [_source(DENSE_ONLY)]  # first in its one ranking
        _add(session, NOW, sources=top, experiment=(experiment.id, "lex"), question="lexical")
        _add(session, NOW, sources=top, experiment=(experiment.id, "control"), question="hybrid")
    groups = AnalyticsService(engine).gaps(1, now=NOW)["groups"]
    assert [e["question"] for g in groups for e in g["examples"]] == ["hybrid"]
    engine.dispose()


def _seed_now(engine: Any) -> None:
    _seed(engine, datetime.now(UTC))


@pytest.fixture
def api(make_settings: MakeSettings) -> Any:
    settings = make_settings(backends="extractive")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def test_the_analytics_api_is_for_admins_and_bounds_days(api: TestClient) -> None:
    url = "/api/admin/analytics"
    assert api.get(url).status_code == 401
    assert api.get(f"{url}/gaps").status_code == 401
    roper = sign_up(api, "roper@example.com")
    refused = api.get(url, headers=roper)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    assert api.get(f"{url}/gaps", headers=roper).status_code == 403
    admin = sign_up(api, "boss@example.com")
    accounts = api.app.state.components.accounts  # type: ignore[attr-defined]
    accounts.admin_update(accounts.find_by_email("boss@example.com").id, role="admin")
    for bad in ("0", "366", "-3", "ten", "1.5"):
        reply = api.get(url, params={"days": bad}, headers=admin)
        assert reply.status_code == 422, bad
        assert reply.json()["error"]["code"] == "validation_error"
        assert api.get(f"{url}/gaps", params={"days": bad}, headers=admin).status_code == 422

    _seed_now(api.app.state.components.engine)  # type: ignore[attr-defined]
    for days, questions in ((1, 5), (3, 11), (365, 13)):
        reply = api.get(url, params={"days": days}, headers=admin)
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert len(body["per_day"]) == days and body["totals"]["questions"] == questions
    default = api.get(url, headers=admin).json()
    assert default["days"] == 30 and default["by_backend"][0]["backend"] == "llamacpp"
    assert default["gaps"]["groups"][0]["topic"] == "mutton busting"
    gaps = api.get(f"{url}/gaps", params={"days": 3, "limit": 1}, headers=admin).json()
    assert [g["topic"] for g in gaps["groups"]] == ["mutton busting"]
    assert gaps["weak_score_below"] == round(2 / 81, 6)


def _cli(data_dir: Path, *args: str) -> Any:
    env = {
        "RODEOAI_DATA_DIR": str(data_dir),
        "RODEOAI_LOG_LEVEL": "WARNING",
        "COLUMNS": "160",  # wide enough that rich does not fold the file names
        **databases.database_env(data_dir),
    }
    return CliRunner().invoke(cli, ["report", *args], env=env)


def test_rodeoai_report_prints_tables_and_json(make_settings: MakeSettings) -> None:
    settings = make_settings()
    engine = make_engine(settings.engine_url)
    _seed_now(engine)
    engine.dispose()
    data_dir = Path(settings.data_dir)

    shown = _cli(data_dir, "--days", "3")
    assert shown.exit_code == 0, shown.output
    for heading in (
        "Questions per day",
        "Latency of finished answers",
        "Feedback by backend",
        "Feedback by skill level",
        "Knowledge gaps: what to write next",
        "knowledge/mutton-busting.md",
    ):
        assert heading in shown.stdout, heading
    assert shown.stdout.index("mutton busting") < shown.stdout.index("Bull Riding")

    as_json = _cli(data_dir, "--days", "3", "--json")
    assert as_json.exit_code == 0, as_json.output
    report = json.loads(as_json.stdout)
    assert report["totals"]["questions"] == 11 and len(report["per_day"]) == 3
    assert report["since"].endswith("T00:00:00+00:00")
    assert report["gaps"]["groups"][0]["topic"] == "mutton busting"

    for bad in ("0", "400"):
        refused = _cli(data_dir, "--days", bad)
        assert refused.exit_code == 2 and "--days" in refused.output
