"""A/B experiments: variants of how questions are answered, split by weight, sticky per
asker, measured by the askers' thumbs and the experts' ratings.

Assignment needs no table: a hash of the experiment and the asker picks a point in [0, 1),
and the variants' weights cut that line into shares. The same asker lands on the same
variant every time, in every worker, for as long as the experiment runs."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from typing import Any

from pydantic import BaseModel, Field, model_validator
from sqlalchemy import Engine
from sqlmodel import col, select

from server.chat.variants import DEFAULT, ChatVariant, PromptStyle, RetrievalMode
from server.db import (
    AnswerMetric,
    Experiment,
    Feedback,
    Review,
    get_meta,
    read_session,
    set_meta,
    utcnow,
    write_session,
)
from server.errors import Conflict, InvalidInput, NotFound
from server.learning.stats import percentile, two_proportion_test, verdict

BACKENDS = ("llamacpp", "extractive", "openai", "ollama")
DEFAULT_KEY = "default_variant"  # Meta key: the promoted winner, used outside experiments
CACHE_S = 5.0  # how long a worker keeps the running experiment before looking again


class VariantSpec(BaseModel):
    """One arm of an experiment. Fields left out keep the server's defaults."""

    name: str = Field(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9_.-]+$")
    weight: float = Field(default=1.0, gt=0, le=1000)
    backend: str | None = Field(default=None, description=f"One of {', '.join(BACKENDS)}")
    model: str | None = Field(default=None, max_length=200, description="For that backend")
    prompt_style: PromptStyle = "standard"
    top_k: int | None = Field(default=None, ge=1, le=20)
    retrieval: RetrievalMode = "hybrid"

    @model_validator(mode="after")
    def _model_needs_backend(self) -> VariantSpec:
        if self.backend is not None and self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}")
        if self.model and not self.backend:
            raise ValueError("a model needs the backend it runs on")
        return self

    def variant(self, experiment_id: int | None) -> ChatVariant:
        return ChatVariant(
            name=self.name,
            experiment_id=experiment_id,
            backend=self.backend,
            model=self.model,
            prompt_style=self.prompt_style,
            top_k=self.top_k,
            retrieval=self.retrieval,
        )


class ExperimentIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    variants: list[VariantSpec] = Field(min_length=2, max_length=6)

    @model_validator(mode="after")
    def _unique_names(self) -> ExperimentIn:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError("variant names must differ")
        return self


def assign(experiment_id: int, subject: str, specs: list[VariantSpec]) -> VariantSpec:
    """The asker's variant: deterministic, sticky, and in proportion to the weights."""
    digest = hashlib.sha256(f"{experiment_id}:{subject}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") / 2**64 * sum(s.weight for s in specs)
    for spec in specs:
        point -= spec.weight
        if point < 0:
            return spec
    return specs[-1]  # only float rounding gets here


def _specs(experiment: Experiment) -> list[VariantSpec]:
    return [VariantSpec.model_validate(v) for v in json.loads(experiment.variants_json)]


def describe(experiment: Experiment) -> dict[str, Any]:
    return {
        "id": experiment.id,
        "name": experiment.name,
        "status": experiment.status,
        "variants": json.loads(experiment.variants_json),
        "winner": experiment.winner,
        "created_at": experiment.created_at,
        "stopped_at": experiment.stopped_at,
    }


class ExperimentService:
    """Create, stop and promote experiments, measure them, and pick variants for chat (it
    is the chat service's `VariantPicker`)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._lock = threading.Lock()
        self._cached: tuple[float, Experiment | None, VariantSpec | None] | None = None

    def create(self, body: ExperimentIn) -> dict[str, Any]:
        with write_session(self.engine) as session:
            self._refuse_while_running(session)
            variants = [v.model_dump(exclude_none=True) for v in body.variants]
            experiment = Experiment(name=body.name, variants_json=json.dumps(variants))
            session.add(experiment)
            session.flush()
            session.refresh(experiment)
            found = describe(experiment)
        self._forget()
        return found

    def list(self) -> list[dict[str, Any]]:
        with read_session(self.engine) as session:
            rows = session.exec(select(Experiment).order_by(col(Experiment.id).desc())).all()
            return [describe(e) for e in rows]

    def get(self, experiment_id: int) -> dict[str, Any]:
        with read_session(self.engine) as session:
            return describe(self._find(session, experiment_id))

    def stop(self, experiment_id: int, *, winner: str | None = None) -> dict[str, Any]:
        """Stop the experiment; with `winner`, that variant becomes how every question is
        answered from now on (until another is promoted)."""
        with write_session(self.engine) as session:
            experiment = self._find(session, experiment_id)
            if winner is not None:
                spec = next((s for s in _specs(experiment) if s.name == winner), None)
                if spec is None:
                    raise InvalidInput(f"no variant named {winner!r}", code="unknown_variant")
                experiment.winner = winner
                set_meta(session, DEFAULT_KEY, spec.model_dump_json(exclude_none=True))
            if experiment.status == "running":
                experiment.status, experiment.stopped_at = "stopped", utcnow()
            session.add(experiment)
            session.flush()
            found = describe(experiment)
        self._forget()
        return found

    def default(self) -> dict[str, Any] | None:
        """The promoted variant that answers outside experiments, or None for the server's
        own defaults."""
        spec = self._current()[1]
        return spec.model_dump(exclude_none=True) if spec else None

    def set_default(self, spec: VariantSpec) -> dict[str, Any]:
        """Make `spec` how every question outside an experiment is answered (as promoting a
        winner does). Refused while an experiment runs: its variants answer everyone then,
        and promoting its winner would silently replace this one."""
        with write_session(self.engine) as session:
            self._refuse_while_running(session)
            set_meta(session, DEFAULT_KEY, spec.model_dump_json(exclude_none=True))
        self._forget()
        return spec.model_dump(exclude_none=True)

    def pick(self, subject: str) -> ChatVariant:
        experiment, default = self._current()
        if experiment is not None and experiment.id is not None:
            return assign(experiment.id, subject, _specs(experiment)).variant(experiment.id)
        return default.variant(None) if default else DEFAULT

    def results(self, experiment_id: int) -> dict[str, Any]:
        with read_session(self.engine) as session:
            experiment = self._find(session, experiment_id)
            rows = session.exec(
                select(AnswerMetric, Feedback)
                .join(Feedback, col(Feedback.answer_id) == AnswerMetric.id, isouter=True)
                .where(AnswerMetric.experiment_id == experiment_id, AnswerMetric.status == "done")
            ).all()
            reviews = session.exec(
                select(Review.answer_id, Review.rating)
                .join(AnswerMetric, col(AnswerMetric.id) == Review.answer_id)
                .where(AnswerMetric.experiment_id == experiment_id)
                .order_by(col(Review.created_at), col(Review.id))
            ).all()
            names = [s.name for s in _specs(experiment)]
            found = describe(experiment)
        latest_review = dict(reviews)  # the newest review of each answer wins
        arms = {name: _arm(name, rows, latest_review) for name in names}
        found["variants"] = list(arms.values())
        found["comparisons"] = _compare(list(arms.values()))
        return found

    def _current(self) -> tuple[Experiment | None, VariantSpec | None]:
        with self._lock:
            if self._cached and time.monotonic() - self._cached[0] < CACHE_S:
                return self._cached[1], self._cached[2]
        with read_session(self.engine) as session:
            running = session.exec(select(Experiment).where(Experiment.status == "running"))
            experiment = running.first()
            stored = get_meta(session, DEFAULT_KEY)
        default = VariantSpec.model_validate_json(stored) if stored else None
        with self._lock:
            self._cached = (time.monotonic(), experiment, default)
        return experiment, default

    def _forget(self) -> None:
        with self._lock:
            self._cached = None

    @staticmethod
    def _refuse_while_running(session: Any) -> None:
        running = session.exec(select(Experiment).where(Experiment.status == "running"))
        if current := running.first():
            raise Conflict(
                f"experiment {current.id} ({current.name}) is running; stop it first",
                code="experiment_running",
            )

    @staticmethod
    def _find(session: Any, experiment_id: int) -> Experiment:
        experiment = session.get(Experiment, experiment_id)
        if experiment is None:
            raise NotFound("no such experiment")
        return experiment


def _arm(name: str, rows: Any, latest_review: dict[int, int]) -> dict[str, Any]:
    mine = [(record, feedback) for record, feedback in rows if record.variant == name]
    ups = sum(1 for _, f in mine if f is not None and f.rating == "up")
    rated = sum(1 for _, f in mine if f is not None)
    expert = [latest_review[r.id] for r, _ in mine if r.id in latest_review]
    latency = [r.latency_ms for r, _ in mine]
    first = [r.time_to_first_token_ms for r, _ in mine if r.time_to_first_token_ms is not None]
    return {
        "name": name,
        "answers": len(mine),
        "rated": rated,
        "thumbs_up": ups,
        "thumbs_up_rate": round(ups / rated, 4) if rated else None,
        "expert_reviews": len(expert),
        "mean_expert_rating": round(sum(expert) / len(expert), 3) if expert else None,
        "latency_ms": {"p50": percentile(latency, 50), "p95": percentile(latency, 95)},
        "time_to_first_token_ms": {"p50": percentile(first, 50), "p95": percentile(first, 95)},
    }


def _compare(arms: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each variant against the first (the control): a two-proportion z-test on the
    thumbs-up rate, and a verdict in plain words."""
    control, out = arms[0], []
    for arm in arms[1:]:
        test = two_proportion_test(
            control["thumbs_up"], control["rated"], arm["thumbs_up"], arm["rated"]
        )
        out.append(
            {
                "control": control["name"],
                "variant": arm["name"],
                **test,
                "verdict": verdict(control["name"], arm["name"], test),
            }
        )
    return out
