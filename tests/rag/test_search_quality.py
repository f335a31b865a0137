"""Retrieval quality over the starter knowledge, on a question set written for it."""

from __future__ import annotations

import json

import pytest

from server.components import Components
from tests.conftest import ROOT

QUESTIONS = [
    json.loads(line)
    for path in sorted((ROOT / "tests" / "data" / "questions").glob("*.jsonl"))
    for line in path.read_text().splitlines()
    if line.strip()
]


def recall_at(components: Components, rank: str, k: int = 5) -> float:
    retriever = components.retriever
    found = 0
    for item in QUESTIONS:
        sources = [h.source for h in retriever.search(item["question"], k, rank)]
        found += bool(set(sources) & set(item["expected"]))
    return found / len(QUESTIONS)


def test_question_set_is_big_enough_and_points_at_real_files() -> None:
    root = ROOT
    assert len(QUESTIONS) >= 40
    for item in QUESTIONS:
        assert item["expected"], item
        for source in item["expected"]:
            assert (root / source).is_file(), source


@pytest.fixture(scope="module")
def scores(shared_components: Components) -> dict[str, float]:
    return {mode: recall_at(shared_components, mode) for mode in ("hybrid", "dense", "lexical")}


def test_hybrid_recall_at_5_is_high(scores: dict[str, float]) -> None:
    print(f"recall@5: {scores}")
    assert scores["hybrid"] >= 0.90


def test_hybrid_is_at_least_as_good_as_either_retriever_alone(scores: dict[str, float]) -> None:
    assert scores["hybrid"] >= max(scores["dense"], scores["lexical"]) - 0.02
