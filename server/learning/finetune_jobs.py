"""Fine-tuning jobs on OpenAI (learning-loop issue, item 6), through the official `openai`
client: upload an export and start a job, follow jobs and their events, and make a
finished job's model the one the OpenAI backend answers with. Retrieval still runs before
every answer, so the result is the hybrid of a fine-tuned model and RAG.

The service lives at RODEOAI_OPENAI_BASE_URL when that is set (any server that speaks the
fine-tuning API), else at api.openai.com with RODEOAI_OPENAI_API_KEY."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from server.config import Settings
from server.errors import AppError, InvalidInput
from server.learning.experiments import ExperimentService, VariantSpec
from server.learning.finetune import MIN_EXAMPLES, check_file

if TYPE_CHECKING:
    import httpx
    import openai

FINETUNED_VARIANT = "finetuned"  # the name `use` gives the default variant
EVENTS = 20  # events shown per job, newest first


class OpenAIUnavailable(AppError):
    status = 502
    code = "openai_error"


def _when(stamp: int | None) -> str | None:
    return datetime.fromtimestamp(stamp, UTC).isoformat() if stamp else None


def describe_job(job: Any) -> dict[str, Any]:
    return {
        "id": job.id,
        "status": job.status,
        "model": job.model,
        "fine_tuned_model": job.fine_tuned_model,
        "training_file": job.training_file,
        "validation_file": job.validation_file,
        "trained_tokens": job.trained_tokens,
        "created_at": _when(job.created_at),
        "finished_at": _when(job.finished_at),
        "error": job.error.message if job.error and job.error.message else None,
    }


class FinetuneJobs:
    def __init__(
        self,
        settings: Settings,
        experiments: ExperimentService,
        *,
        http_client: httpx.Client | None = None,
    ) -> None:
        self.settings = settings
        self.experiments = experiments
        self.http_client = http_client  # tests pass one with a mock transport

    @cached_property
    def client(self) -> openai.OpenAI:
        from openai import OpenAI

        s = self.settings
        if s.openai_api_key is None and s.openai_base_url is None:
            raise AppError(
                "fine-tuning needs RODEOAI_OPENAI_API_KEY (or RODEOAI_OPENAI_BASE_URL)",
                code="openai_not_configured",
            )
        # A base URL without a key is a local OpenAI-compatible server that wants none.
        key = s.openai_api_key.get_secret_value() if s.openai_api_key else "not-needed"
        return OpenAI(
            api_key=key,
            base_url=s.openai_base_url,
            # openai takes an httpx.Client as well as its own httpx2.Client; its hints
            # name only httpx2.
            http_client=cast(Any, self.http_client),
            max_retries=1,
        )

    def _call(self, what: str, call: Any, *args: Any, **kwargs: Any) -> Any:
        import openai

        try:
            return call(*args, **kwargs)
        except openai.NotFoundError:
            raise AppError(f"OpenAI knows no such {what}", code="not_found", status=404) from None
        except openai.APIError as exc:
            raise OpenAIUnavailable(f"OpenAI refused to {what}: {exc}") from exc

    def submit(
        self, out_dir: Path, *, model: str | None = None, suffix: str | None = None
    ) -> dict[str, Any]:
        """Check the export in `out_dir`, upload its files and create the job."""
        train, validation = out_dir / "train.jsonl", out_dir / "validation.jsonl"
        if not train.is_file():
            raise InvalidInput(
                f"no {train}: run `rodeoai finetune export {out_dir}` first", code="no_export"
            )
        checks = [check_file(train)]
        if validation.is_file() and validation.stat().st_size:
            checks.append(check_file(validation))
        for check in checks:
            if not check["valid"]:
                raise InvalidInput(
                    f"{check['file']} breaks OpenAI's format: {check['problems'][0]}",
                    code="invalid_export",
                    details=check,
                )
        if checks[0]["examples"] < MIN_EXAMPLES:
            raise InvalidInput(
                f"{checks[0]['examples']} training examples; OpenAI needs at least {MIN_EXAMPLES}",
                code="too_few_examples",
            )
        files = self.client.files
        uploaded = [
            self._call(
                "upload a file",
                files.create,
                file=(path.name, path.read_bytes()),
                purpose="fine-tune",
            ).id
            for path in (train, validation)[: len(checks)]
        ]
        job = self._call(
            "create a fine-tuning job",
            self.client.fine_tuning.jobs.create,
            model=model or self.settings.finetune_base_model,
            training_file=uploaded[0],
            validation_file=uploaded[1] if len(uploaded) > 1 else None,
            suffix=suffix or None,
        )
        return {**describe_job(job), "examples": {c["file"]: c["examples"] for c in checks}}

    def list(self, *, limit: int = 20) -> list[dict[str, Any]]:
        page = self._call("list jobs", self.client.fine_tuning.jobs.list, limit=limit)
        return [describe_job(job) for job in page.data]

    def get(self, job_id: str) -> dict[str, Any]:
        """One job and its newest events."""
        jobs = self.client.fine_tuning.jobs
        job = self._call("job", jobs.retrieve, job_id)
        events = self._call("job", jobs.list_events, job_id, limit=EVENTS)
        return {
            **describe_job(job),
            "events": [
                {"created_at": _when(e.created_at), "level": e.level, "message": e.message}
                for e in events.data
            ],
        }

    def use(self, job_id: str) -> dict[str, Any]:
        """Make the job's model what the OpenAI backend answers with, for every question
        outside an experiment (refused while one runs, and until the job succeeded)."""
        job = self._call("job", self.client.fine_tuning.jobs.retrieve, job_id)
        if job.status != "succeeded" or not job.fine_tuned_model:
            raise AppError(
                f"job {job_id} is {job.status}; only a succeeded job has a model to use",
                code="job_not_finished",
                status=409,
            )
        spec = VariantSpec(name=FINETUNED_VARIANT, backend="openai", model=job.fine_tuned_model)
        variant = self.experiments.set_default(spec)
        warnings = []
        if "openai" not in self.settings.backend_order:
            warnings.append(
                "the openai backend is not in the failover chain (set RODEOAI_OPENAI_API_KEY, "
                "or add openai to RODEOAI_BACKENDS): answers fall back to the other backends "
                "until it is"
            )
        return {"job": describe_job(job), "default_variant": variant, "warnings": warnings}
