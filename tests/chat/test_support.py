"""The sentence-level support check: on hand-labelled sentences, on the drafts the bundled
model really wrote (read by hand), and through the chat path into the answer record."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from server.chat.quantities import quantities
from server.chat.support import SupportCheck, claim_text
from server.components import Components
from server.db import AnswerMetric, read_session
from server.llm.chain import FailoverChain
from server.llm.extractive import ExtractiveBackend
from server.llm.fake import FakeBackend
from server.main import create_app
from server.rag.embedder import load_embedder
from tests.conftest import KNOWLEDGE, ROOT

pytestmark = pytest.mark.one_pass  # the check reads no database; the record test is in-process
DATA = ROOT / "tests" / "data" / "support"


def _lines(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line]


def _as(sentence: str) -> str:
    return claim_text(sentence).rstrip(".")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Soft lays are about 7/8 inch [1].", [("7/8", "inch")]),  # one fraction, not 7 and 8
        ("The penalty is 5 seconds (1).", [("5", "second")]),  # "(1)" cites, it claims nothing
        ("It carries a 10-second penalty.", [("10", "second")]),
        ("A saddle costs $5,000 【2】.", [("5000", "dollar")]),
        ("Stay on for eight seconds.", [("8", "second")]),
        ("1. Keep the tip up [3].", []),  # a list number
        ("Pick the one that turns.", []),  # "one" as a word, not an amount
        ("Slack counts half as much.", [("1/2", None)]),  # a ratio is an amount
    ],
)
def test_quantities_are_read_whole(text: str, expected: list[tuple[str, str]]) -> None:
    assert [(str(q.value), q.unit) for q in quantities(text)] == expected


def test_labelled_sentences_precision_and_recall() -> None:
    """The thresholds were set on this set: 341 sentences written for it, each with the
    facts a model would have been given. Reports how the check does; fails if it slips."""
    check = SupportCheck(load_embedder(None))
    documents = [p.read_text().replace("**", "") for p in KNOWLEDGE.glob("*.md")]
    counts = {"tp": 0, "fp": 0, "fn": 0, "tn": 0}
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in _lines("sentences.jsonl"):  # one encoding batch per question and its facts
        groups.setdefault((row["question"], json.dumps(row["facts"])), []).append(row)
    for (question, facts_json), rows in groups.items():
        facts = [fact for _, fact in json.loads(facts_json)]
        context = " ".join(d for d in documents if any(f in d for f in facts))
        verdicts = check.verdicts([r["sentence"] for r in rows], facts, question, context)
        for row, verdict in zip(rows, verdicts, strict=True):
            unsupported = row["label"] == "unsupported"
            key = ("fp", "tp")[unsupported] if not verdict.kept else ("tn", "fn")[unsupported]
            counts[key] += 1
    assert sum(counts.values()) >= 100
    dropped = counts["tp"] / (counts["tp"] + counts["fn"])  # unsupported sentences dropped
    kept = counts["tn"] / (counts["tn"] + counts["fp"])  # supported sentences kept
    precision = counts["tp"] / (counts["tp"] + counts["fp"])  # drops that were right
    print(f"support check: {counts}; unsupported dropped {dropped:.3f}, supported kept "
          f"{kept:.3f}, precision of drops {precision:.3f}")  # fmt: skip
    # Measured 0.849 / 0.917 / 0.912 before the checks for contradictions that keep the
    # facts' words (contradictions.py); 0.953 / 0.959 / 0.959 with them. Issue 14's floor:
    assert dropped >= 0.95 and kept >= 0.9 and precision >= 0.95


def test_the_drafts_read_by_hand_come_out_clean(shared_components: Components) -> None:
    """Each draft the bundled model wrote, replayed as a fixed output through the real chat
    path against today's retrieval: every unsupported sentence is dropped, every supported
    one (the "(1)" answer's first sentence among them) is kept."""
    chat = shared_components.chat
    real_chain = chat.chain
    try:
        for row in _lines("answers-read-by-hand.jsonl"):
            chat.chain = FailoverChain([FakeBackend([row["draft"]]), ExtractiveBackend()])
            _assert_clean(row, chat)
    finally:
        chat.chain = real_chain  # the components are shared with other tests


def _assert_clean(row: dict[str, Any], chat: Any) -> None:
    if True:
        answer = asyncio.run(
            chat.answer(
                [{"role": "user", "content": row["question"]}],
                skill_level=row["skill_level"],
                trial=True,  # read-only shared data: nothing recorded or billed
            )
        )
        dropped = {_as(d["sentence"]) for d in answer.dropped}
        for sentence in row["unsupported"]:
            assert _as(sentence) in dropped, (row["question"], sentence, answer.dropped)
        shown = claim_text(answer.response)
        for sentence in row["supported"]:
            assert _as(sentence) in shown, (row["question"], sentence, answer.response)
            assert not answer.replaced


def test_an_unsupported_sentence_is_dropped_and_the_record_says_why(
    kb_settings: Any,
) -> None:
    draft = (
        "The penalty for a heeler catching one leg is 5 seconds (1). "
        "The heeler must also pay the arena a $50 fine [1]."
    )
    app = create_app(kb_settings)
    with TestClient(app) as client:
        app.state.components.chat.chain = FailoverChain([FakeBackend([draft])])
        question = {"role": "user", "content": "What is the penalty for a heeler catching one leg?"}
        reply = client.post("/api/chat", json={"messages": [question]}).json()
        record_skipped = _skipped_of(app.state.components, reply["answer_id"])
    assert reply["backend"] == "fake"
    assert reply["response"].startswith(
        "The penalty for a heeler catching one leg is 5 seconds [1]."
    )
    assert "$50" not in reply["response"]
    reasons = [s["reason"] for s in reply["skipped_backends"]]
    assert len(reasons) == 1 and "$50 fine" in reasons[0] and "$50" in reasons[0], reasons
    assert record_skipped == reply["skipped_backends"]
    assert [d["sentence"] for d in reply["dropped"]] == [
        "The heeler must also pay the arena a $50 fine [1]."
    ]


def _skipped_of(components: Components, answer_id: int) -> list[dict[str, str]]:
    with read_session(components.engine) as session:
        row = session.get(AnswerMetric, answer_id)
    assert row is not None
    return list(json.loads(row.skipped_json))
