"""Offline evaluation: a question set through the real chat path, measured, so a change
(a prompt style, top-k, a retrieval mode, a model) is weighed before it reaches users.

A line of the question set is `{"q": ..., "doc"?: ..., "keywords"?: [...]}`: `doc` names
the document that should be retrieved (its source, such as `knowledge/tie-down-roping.md`,
or its file name), `keywords` the words a good answer contains. Runs are trials: neither
billed nor recorded, so they never reach analytics, experiments or the review queue."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from server.chat.pipeline import ChatService
from server.errors import InvalidInput
from server.learning.experiments import VariantSpec
from server.learning.stats import percentile
from server.llm.cleanup import cited_numbers

RECALL_DEPTH = 5


class EvalQuestion(BaseModel):
    q: str = Field(min_length=1)
    doc: str | None = None
    keywords: list[str] = Field(default_factory=list)


def read_questions(path: Path) -> list[EvalQuestion]:
    """Every line checked before any question is asked; a bad line names its number."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}", code="unreadable_file") from exc
    questions = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            questions.append(EvalQuestion.model_validate_json(line))
        except ValidationError as exc:
            problem = exc.errors()[0]
            raise InvalidInput(
                f"{path.name} line {number}: {problem['msg']}", code="invalid_question_set"
            ) from exc
    if not questions:
        raise InvalidInput(f"{path.name} holds no questions", code="invalid_question_set")
    return questions


def parse_variant(text: str) -> VariantSpec:
    """`--variant` is a variant as JSON, such as `{"name": "lex", "retrieval": "lexical"}`."""
    try:
        return VariantSpec.model_validate_json(text)
    except ValidationError as exc:
        raise InvalidInput(
            f"bad --variant {text!r}: {exc.errors()[0]['msg']}", code="invalid_variant"
        ) from exc


def same_document(source: str, doc: str) -> bool:
    return source == doc or Path(source).name == Path(doc).name


@dataclass
class Tally:
    """One variant's running totals."""

    name: str
    answered: int = 0
    with_doc: int = 0
    found_at_1: int = 0
    found_at_5: int = 0
    keyword_share: list[float] = field(default_factory=list)
    cited: int = 0
    extractive: int = 0
    dropped: int = 0  # sentences the support check removed, over all answers
    latency_ms: list[int] = field(default_factory=list)
    misses: list[str] = field(default_factory=list)

    def report(self) -> dict[str, Any]:
        def rate(count: int, total: int) -> float | None:
            return round(count / total, 4) if total else None

        return {
            "variant": self.name,
            "questions": self.answered,
            "recall_at_1": rate(self.found_at_1, self.with_doc),
            "recall_at_5": rate(self.found_at_5, self.with_doc),
            "keyword_hit_rate": round(sum(self.keyword_share) / len(self.keyword_share), 4)
            if self.keyword_share
            else None,
            "citation_rate": rate(self.cited, self.answered),
            "extractive_fallback_rate": rate(self.extractive, self.answered),
            "sentences_dropped_per_answer": round(self.dropped / self.answered, 3)
            if self.answered
            else None,
            "latency_ms": {
                "p50": percentile(self.latency_ms, 50),
                "p95": percentile(self.latency_ms, 95),
            },
            "retrieval_misses": self.misses[:10],
        }


async def evaluate(
    chat: ChatService,
    questions: list[EvalQuestion],
    variants: Iterable[VariantSpec],
    *,
    progress: Callable[[str, int], None] = lambda name, done: None,
) -> list[dict[str, Any]]:
    """Each variant answers every question in turn; one report per variant."""
    reports = []
    for spec in variants:
        tally, variant = Tally(spec.name), spec.variant(None)
        for done, item in enumerate(questions, 1):
            await _one(chat, item, variant, tally)
            progress(spec.name, done)
        reports.append(tally.report())
    return reports


async def _one(chat: ChatService, item: EvalQuestion, variant: Any, tally: Tally) -> None:
    messages = [{"role": "user", "content": item.q}]
    answer = await chat.answer(messages, variant=variant, trial=True, api="eval")
    tally.answered += 1
    tally.latency_ms.append(answer.latency_ms)
    tally.cited += bool(cited_numbers(answer.response))
    tally.extractive += answer.backend == "extractive"
    tally.dropped += len(answer.dropped)
    if item.keywords:
        text = answer.response.lower()
        tally.keyword_share.append(
            sum(k.lower() in text for k in item.keywords) / len(item.keywords)
        )
    if item.doc:
        hits = chat.retriever.search(item.q, RECALL_DEPTH, variant.retrieval)
        ranked = [h.source for h in hits]
        tally.with_doc += 1
        tally.found_at_1 += bool(ranked) and same_document(ranked[0], item.doc)
        found = any(same_document(s, item.doc) for s in ranked)
        tally.found_at_5 += found
        if not found:
            tally.misses.append(item.q)


def dumps(reports: list[dict[str, Any]]) -> str:
    return json.dumps({"variants": reports}, indent=2)
