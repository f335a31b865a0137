"""Analytics for administrators, from the recorded answers: questions per day, latency
percentiles, feedback rates by backend and by skill level; and the knowledge-gap report,
the questions the knowledge base answers badly, grouped by topic, which tells the team
what to write next in `knowledge/`.

Everything is read for one window of whole UTC days (today and the N - 1 before it) and
added up here, in Python, so the same code gives the same numbers on SQLite and PostgreSQL.

A question is a knowledge gap when any of these holds (its need, summed, ranks the groups):

- an expert's review named a knowledge gap (weight 3: an expert read it and says so);
- the asker gave it a thumbs-down (weight 2);
- retrieval was weak (weight 1): no source at all, the best source's score below
  `weak_score`, or the extractive backend answering that no facts matched.

Topics need no model. A gap whose best source is a decent match (not weak) belongs to that
source's document: the team should extend that file. The rest (weak retrieval: the
knowledge base has nothing close) are clustered by the significant words they share, most
shared word first, and each cluster suggests a new file named after its words. Groups rank
by need, then by how many questions they hold, then by the newest question."""

from __future__ import annotations

import heapq
import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Engine
from sqlalchemy import select as columns
from sqlmodel import col, func, select

from server.db import AnswerMetric, Experiment, Feedback, Review, read_session, utcnow
from server.errors import InvalidInput
from server.learning.review import recorded_sources
from server.learning.stats import percentile
from server.llm.extractive import extractive_answer

MIN_DAYS, MAX_DAYS, DEFAULT_DAYS = 1, 365, 30
MAX_ROWS = 100_000  # answers read per report, newest first; more sets "truncated"
MAX_GAPS = 5_000  # gap questions grouped into topics, the most needed first

# Weak retrieval. Source scores are reciprocal-rank fusion, not similarity: a chunk at
# 0-based rank r in a ranking earns 1 / (rrf_k + r + 1) from it, so with the default
# rrf_k = 60 a chunk first in both the dense and the lexical ranking scores 2/61 = 0.0328,
# and one first in the dense ranking but absent from the lexical one (no word of the
# question in the knowledge) scores 1/61 = 0.0164. Measured on the starter knowledge
# (33 documents): the 83 in-domain questions of tests/data/questions score 0.0292 to
# 0.0328 (median 0.0328, 98% at 0.030 or more); out-of-domain questions ("What is the
# capital of France?", "How do I file my taxes?") score 0.0164. Weak is below what a chunk
# ranked 21st (r = 20) by every ranking would get: 2/81 = 0.0247 for hybrid retrieval,
# half that for an experiment variant that uses one ranking alone. Fusion cannot tell an
# off-topic question that shares a word with the knowledge ("How do I fix a leaking
# faucet?" scores 0.032); the askers' thumbs and the experts' tags catch those.
WEAK_RANK = 20

EXPERT_WEIGHT, DOWN_WEIGHT, WEAK_WEIGHT = 3, 2, 1
EXAMPLES, NOTES = 5, 5  # per group in the report
NO_FACTS = extractive_answer([])  # what the extractive backend says when no fact matched

STOPWORDS = frozenset(
    """a about above after again against all also am an and any are aren as ask at be
    because been before being below best better between both but by can cannot could did
    didn do does doesn doing don done down during each else ever every explain far few for
    from get gets getting give go going good got had has have having he her here hers him
    his how however i if in into is isn it its just keep kind know let like lot make many
    may me might mine more most much must my need needs never new no nor not now of off on
    once one only or other our out over own please put really right same say says see
    should so some still such sure take tell than that the their them then there these
    they thing things think this those through to too try under until up us use used using
    very want was way we well were what when where whether which while who whom whose why
    will with without would yes yet you your yours""".split()
)


def weak_score(rrf_k: int = 60, rankings: int = 2) -> float:
    """The best-source score below which retrieval counts as weak (see WEAK_RANK)."""
    return rankings / (rrf_k + WEAK_RANK + 1)


def check_days(days: int) -> int:
    if not MIN_DAYS <= days <= MAX_DAYS:
        raise InvalidInput(f"days must be between {MIN_DAYS} and {MAX_DAYS}", code="invalid_days")
    return days


def significant_words(text: str) -> list[str]:
    """The question's words that say what it is about, in order, once each: lower-cased,
    stopwords and words under three letters dropped, a plural's final s removed."""
    seen: list[str] = []
    for word in re.findall(r"[a-z0-9]+", text.lower().replace("'", "")):
        if len(word) < 3 or word in STOPWORDS or word.isdigit():
            continue
        if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
            word = word[:-1]
        if word not in seen and word not in STOPWORDS:
            seen.append(word)
    return seen


@dataclass
class Gap:
    answer_id: int
    question: str
    created_at: datetime
    weak: bool
    down: bool
    expert: bool
    top_score: float
    top_source: dict[str, Any] | None
    notes: list[str] = field(default_factory=list)

    @property
    def need(self) -> int:
        return EXPERT_WEIGHT * self.expert + DOWN_WEIGHT * self.down + WEAK_WEIGHT * self.weak

    def reasons(self) -> list[str]:
        flags = (("expert_gap", self.expert), ("thumbs_down", self.down), ("weak", self.weak))
        return [name for name, on in flags if on]


@dataclass
class _Row:
    id: int
    created_at: datetime
    status: str
    backend: str
    skill_level: str
    latency_ms: int
    first_token_ms: int | None
    question: str
    sources_json: str
    opening: str
    experiment_id: int | None
    variant: str | None
    rating: str | None


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _rates(rows: list[_Row]) -> dict[str, Any]:
    rated = [r for r in rows if r.rating is not None]
    ups = sum(1 for r in rated if r.rating == "up")
    return {
        "answers": len(rows),
        "rated": len(rated),
        "thumbs_up": ups,
        "thumbs_down": len(rated) - ups,
        "thumbs_up_rate": round(ups / len(rated), 4) if rated else None,
        "feedback_rate": round(len(rated) / len(rows), 4) if rows else None,
    }


def _latency(rows: list[_Row]) -> dict[str, Any]:
    latency = [r.latency_ms for r in rows]
    first = [r.first_token_ms for r in rows if r.first_token_ms is not None]
    return {
        "latency_ms": {q: percentile(latency, n) for q, n in (("p50", 50), ("p95", 95))},
        "time_to_first_token_ms": {q: percentile(first, n) for q, n in (("p50", 50), ("p95", 95))},
    }


def _breakdown(rows: list[_Row], key: str) -> list[dict[str, Any]]:
    groups: dict[str, list[_Row]] = defaultdict(list)
    for row in rows:
        groups[getattr(row, key)].append(row)
    out = [{key: name, **_rates(mine), **_latency(mine)} for name, mine in groups.items()]
    return sorted(out, key=lambda g: (-g["answers"], g[key]))


class AnalyticsService:
    def __init__(self, engine: Engine, *, rrf_k: int = 60) -> None:
        self.engine = engine
        self.rrf_k = rrf_k

    def report(
        self, days: int = DEFAULT_DAYS, *, limit: int = 20, now: datetime | None = None
    ) -> dict[str, Any]:
        """Questions per day, latency, feedback by backend and skill level, and the
        knowledge-gap report, for the last `days` UTC days (today included)."""
        since, first_day, today = self._window(days, now)
        rows, truncated, reviews, modes = self._read(since)
        done = [r for r in rows if r.status == "done"]
        per_day: dict[date, Counter[str]] = {
            first_day + timedelta(days=n): Counter() for n in range((today - first_day).days + 1)
        }
        for row in rows:
            per_day.setdefault(_utc(row.created_at).date(), Counter())[row.status] += 1
        statuses = Counter(r.status for r in rows)
        return {
            "days": days,
            "since": since,
            "truncated": truncated,
            "totals": {
                "questions": len(rows),
                "done": statuses["done"],
                "aborted": statuses["aborted"],
                "failed": statuses["failed"],
                **{k: v for k, v in _rates(done).items() if k != "answers"},
            },
            "per_day": [
                {
                    "date": day.isoformat(),
                    "questions": sum(counts.values()),
                    "done": counts["done"],
                    "aborted": counts["aborted"],
                    "failed": counts["failed"],
                }
                for day, counts in sorted(per_day.items())
            ],
            "latency": {
                **_latency(done),
                "p99_latency_ms": percentile([r.latency_ms for r in done], 99),
            },
            "by_backend": _breakdown(done, "backend"),
            "by_skill_level": _breakdown(done, "skill_level"),
            "gaps": self._gap_report(done, reviews, modes, limit),
        }

    def gaps(
        self, days: int = DEFAULT_DAYS, *, limit: int = 20, now: datetime | None = None
    ) -> dict[str, Any]:
        """The knowledge-gap report alone: what to write next."""
        since, _, _ = self._window(days, now)
        rows, truncated, reviews, modes = self._read(since)
        done = [r for r in rows if r.status == "done"]
        return {
            "days": days,
            "since": since,
            "truncated": truncated,
            **self._gap_report(done, reviews, modes, limit),
        }

    # --- reading ------------------------------------------------------------------------

    @staticmethod
    def _window(days: int, now: datetime | None) -> tuple[datetime, date, date]:
        check_days(days)
        today = _utc(now or utcnow()).date()
        first_day = today - timedelta(days=days - 1)
        since = datetime(first_day.year, first_day.month, first_day.day, tzinfo=UTC)
        return since, first_day, today

    def _read(
        self, since: datetime
    ) -> tuple[list[_Row], bool, dict[int, list[str]], dict[tuple[int, str], str]]:
        in_window = col(AnswerMetric.created_at) >= since
        with read_session(self.engine) as session:
            found = (
                session.connection()
                .execute(
                    columns(
                        col(AnswerMetric.id),
                        col(AnswerMetric.created_at),
                        col(AnswerMetric.status),
                        col(AnswerMetric.backend),
                        col(AnswerMetric.skill_level),
                        col(AnswerMetric.latency_ms),
                        col(AnswerMetric.time_to_first_token_ms),
                        col(AnswerMetric.question),
                        col(AnswerMetric.sources_json),
                        func.substr(col(AnswerMetric.response), 1, len(NO_FACTS) + 10),
                        col(AnswerMetric.experiment_id),
                        col(AnswerMetric.variant),
                        col(Feedback.rating),
                    )
                    .join(Feedback, col(Feedback.answer_id) == AnswerMetric.id, isouter=True)
                    .where(in_window)
                    .order_by(col(AnswerMetric.created_at).desc(), col(AnswerMetric.id).desc())
                    .limit(MAX_ROWS + 1)
                )
                .all()
            )
            gap_notes = session.exec(
                select(Review.answer_id, Review.knowledge_gap)
                .join(AnswerMetric, col(AnswerMetric.id) == Review.answer_id)
                .where(in_window, col(Review.knowledge_gap).is_not(None))
                .order_by(col(Review.created_at), col(Review.id))
            ).all()
            experiment_ids = {r[10] for r in found if r[10] is not None}
            experiments = (
                session.exec(select(Experiment).where(col(Experiment.id).in_(experiment_ids))).all()
                if experiment_ids
                else []
            )
        rows = [_Row(*r) for r in found[:MAX_ROWS]]
        reviews: dict[int, list[str]] = defaultdict(list)
        for answer_id, note in gap_notes:
            if note and note.strip() and note.strip() not in reviews[answer_id]:
                reviews[answer_id].append(note.strip())
        modes = {
            (e.id, v.get("name", "")): v.get("retrieval", "hybrid")
            for e in experiments
            if e.id is not None
            for v in json.loads(e.variants_json)
        }
        return rows, len(found) > MAX_ROWS, reviews, modes

    # --- the knowledge-gap report -------------------------------------------------------

    def _gap_report(
        self,
        done: list[_Row],
        reviews: dict[int, list[str]],
        modes: dict[tuple[int, str], str],
        limit: int,
    ) -> dict[str, Any]:
        hybrid = weak_score(self.rrf_k, 2)
        gaps: list[Gap] = []
        for row in done:
            sources = recorded_sources(row.sources_json)
            scores = [float(s.get("score") or 0) for s in sources]
            best = max(range(len(scores)), key=lambda i: scores[i]) if scores else None
            top = scores[best] if best is not None else 0.0
            mode = "hybrid"
            if row.experiment_id is not None and row.variant:
                mode = modes.get((row.experiment_id, row.variant), "hybrid")
            threshold = hybrid if mode == "hybrid" else weak_score(self.rrf_k, 1)
            no_facts = row.backend == "extractive" and (row.opening or "").strip().startswith(
                NO_FACTS
            )
            weak = best is None or top < threshold or no_facts
            down, expert = row.rating == "down", row.id in reviews
            if weak or down or expert:
                gaps.append(
                    Gap(
                        answer_id=row.id,
                        question=row.question,
                        created_at=_utc(row.created_at),
                        weak=weak,
                        down=down,
                        expert=expert,
                        top_score=round(top, 6),
                        top_source=None if best is None else sources[best],
                        notes=reviews.get(row.id, []),
                    )
                )
        # Topics from the most needed questions (then the newest) when there are very many.
        gaps.sort(key=lambda g: (-g.need, -g.created_at.timestamp(), -g.answer_id))
        groups = [_describe(*found) for found in _group(gaps[:MAX_GAPS])]
        groups.sort(key=lambda g: (-g["need"], -g["questions"], -g["_latest"], g["topic"]))
        for group in groups:
            del group["_latest"]
        return {
            "weak_score_below": round(hybrid, 6),
            "weights": {
                "expert_gap": EXPERT_WEIGHT,
                "thumbs_down": DOWN_WEIGHT,
                "weak": WEAK_WEIGHT,
            },
            "gap_questions": len(gaps),
            "groups": groups[:limit],
        }


def _group(gaps: list[Gap]) -> Iterable[tuple[str, str, str, list[Gap]]]:
    """(topic, suggested file, action, members): by the best source's document where the
    match is decent, else by shared significant words."""
    by_document: dict[str, list[Gap]] = defaultdict(list)
    loose: list[Gap] = []
    for gap in gaps:
        if not gap.weak and gap.top_source and gap.top_source.get("source"):
            by_document[str(gap.top_source["source"])].append(gap)
        else:
            loose.append(gap)
    for source, members in by_document.items():
        titles = Counter(str((g.top_source or {}).get("title") or source) for g in members)
        yield min(titles, key=lambda t: (-titles[t], t)), source, "extend", members
    words = {id(g): significant_words(g.question) for g in loose}
    having: dict[str, list[int]] = defaultdict(list)  # word -> the questions that use it
    for i, gap in enumerate(loose):
        for word in words[id(gap)]:
            having[word].append(i)
    shared = {word: len(found) for word, found in having.items()}
    heap = [(-count, word) for word, count in shared.items()]
    heapq.heapify(heap)
    taken: set[int] = set()
    while heap:
        # the word most of the remaining questions share (ties: alphabetical) makes a topic
        count, word = heapq.heappop(heap)
        if -count != shared[word]:
            continue  # stale: questions left with an earlier topic
        if -count < 2:
            break
        picked = [i for i in having[word] if i not in taken]
        taken.update(picked)
        for i in picked:
            for other in words[id(loose[i])]:
                shared[other] -= 1
                if other != word and shared[other]:
                    heapq.heappush(heap, (-shared[other], other))
        yield _words_topic([loose[i] for i in picked], words, word)
    left = [gap for i, gap in enumerate(loose) if i not in taken]
    for gap in left:  # a question that shares no word with another stands alone
        yield _words_topic([gap], words, None)


def _words_topic(
    members: list[Gap], words: dict[int, list[str]], word: str | None
) -> tuple[str, str, str, list[Gap]]:
    """The label: the shared word and the next word most of the group shares (or, alone,
    the question's first two words), in the order the newest question says them."""
    counts = Counter(w for g in members for w in words[id(g)])
    newest = max(members, key=lambda g: (g.created_at, g.answer_id))
    order = {w: i for i, w in enumerate(words[id(newest)])}
    chosen = [word] if word else []
    quorum = max(2, (len(members) + 1) // 2) if len(members) > 1 else 1
    for w in sorted(counts, key=lambda w: (-counts[w], order.get(w, len(order)), w)):
        if len(chosen) >= 2:
            break
        if w not in chosen and counts[w] >= quorum:
            chosen.append(w)
    chosen.sort(key=lambda w: order.get(w, len(order)))
    label = " ".join(chosen) or "other"
    slug = "-".join(chosen) or "other-questions"
    return label, f"knowledge/{slug}.md", "new", members


def _describe(label: str, file: str, action: str, members: list[Gap]) -> dict[str, Any]:
    ordered = sorted(members, key=lambda g: (-g.need, -g.created_at.timestamp(), -g.answer_id))
    examples: list[dict[str, Any]] = []
    seen: set[str] = set()
    for gap in ordered:
        key = " ".join(gap.question.lower().split())
        if key in seen or len(examples) >= EXAMPLES:
            continue
        seen.add(key)
        examples.append(
            {
                "answer_id": gap.answer_id,
                "question": gap.question,
                "reasons": gap.reasons(),
                "top_score": gap.top_score,
                "created_at": gap.created_at,
            }
        )
    notes: list[str] = []
    for gap in ordered:
        for note in gap.notes:
            if note not in notes and len(notes) < NOTES:
                notes.append(note)
    return {
        "topic": label,
        "questions": len(members),
        "need": sum(g.need for g in members),
        "expert_gaps": sum(g.expert for g in members),
        "thumbs_down": sum(g.down for g in members),
        "weak": sum(g.weak for g in members),
        "examples": examples,
        "notes": notes,
        "suggested_file": file,
        "action": action,
        "latest": max(g.created_at for g in members),
        "_latest": max(g.created_at for g in members).timestamp(),
    }
