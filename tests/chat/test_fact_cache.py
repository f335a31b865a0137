"""The fact cache: the passages' sentences are encoded once, not for every question, so
fact selection, citation and the support check cost the first token almost nothing."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient

from server.chat.prompting import fact_units, fit_passages, select_facts, warm_fact_cache
from server.components import Components
from server.config import Settings
from server.main import create_app
from server.rag.embedder import Embedder

pytestmark = pytest.mark.one_pass  # engine-agnostic

QUESTION = "What's the penalty when the heeler only gets one hind leg?"


class Counting:
    """The real embedder, counting the texts it actually encodes."""

    def __init__(self, embedder: Embedder) -> None:
        self.embedder, self.encoded = embedder, 0
        self._encode = embedder.encode

    def __enter__(self) -> Counting:
        def encode(texts: list[str], **kwargs: object) -> np.ndarray:
            self.encoded += len(texts)
            return self._encode(texts, **kwargs)  # type: ignore[arg-type]

        self.embedder.encode = encode  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        del self.embedder.encode


@pytest.fixture
def embedder(shared_components: Components) -> Iterator[Embedder]:
    embedder = shared_components.embedder
    saved = dict(embedder._cache)
    embedder._cache.clear()
    yield embedder
    embedder._cache.clear()
    embedder._cache.update(saved)
    embedder.cache_size = 20_000


def test_cached_vectors_are_the_encoders_and_the_oldest_go_first(embedder: Embedder) -> None:
    texts = ["Heelers rope the hind feet.", "Headers rope the horns.", "Dally fast."]
    fresh = embedder.encode(texts)
    assert np.allclose(embedder.encode_cached(texts), fresh, atol=1e-5)
    assert np.allclose(embedder.encode_cached(texts[::-1]), fresh[::-1], atol=1e-5)
    embedder.cache_size = 2  # the reversed call used texts[0] last: it stays
    embedder.encode_cached(["A barrel pattern is a cloverleaf."])
    assert embedder.cached(texts[0]) and not embedder.cached(texts[1])
    assert not embedder.cached(texts[2])


def test_after_warm_up_fact_selection_encodes_only_the_question(
    shared_components: Components, embedder: Embedder
) -> None:
    components = shared_components
    hits = components.retriever.search(QUESTION, 5)
    passages = fit_passages(hits, embedder, 1500)
    units = sum(len(fact_units(p.text)) for p in passages)
    with Counting(embedder) as cold:
        expected = select_facts("Which leg counts?", passages, embedder, 6)
    assert cold.encoded >= units > 5  # every sentence, the first time

    embedder._cache.clear()
    warmed = warm_fact_cache([h.text for h in hits], embedder, threading.Event(), batch=4)
    assert warmed >= units - 2  # duplicates across passages are encoded once
    with Counting(embedder) as warm:
        facts = select_facts("Which leg counts?", passages, embedder, 6)
    assert warm.encoded == 1  # the question alone
    assert facts == expected


def test_warm_up_stops_when_told_and_at_the_cache_size(
    shared_components: Components, embedder: Embedder
) -> None:
    texts = [h.text for h in shared_components.retriever.search(QUESTION, 5)]
    stop = threading.Event()
    stop.set()
    assert warm_fact_cache(texts, embedder, stop) == 0
    embedder.cache_size = 8
    assert warm_fact_cache(texts, embedder, threading.Event(), batch=4) <= 8


def test_the_server_warms_the_cache_after_start_up(kb_settings: Settings) -> None:
    settings = kb_settings.model_copy(update={"fact_cache_warmup": True})
    with TestClient(create_app(settings)) as http:
        embedder = http.app.state.components.embedder  # type: ignore[attr-defined]
        components: Components = http.app.state.components  # type: ignore[attr-defined]
        hit = components.retriever.search(QUESTION, 1)[0]
        last = fact_units(hit.text)[-1]
        deadline = time.monotonic() + 120  # a cap for a stuck thread, not a timing check
        while not embedder.cached(last) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert embedder.cached(last)
        # /health says so while the warm-up runs, and not once it has finished.
        while "background" in (startup := http.get("/health").json()["startup"]):
            assert startup["background"] == "warming the fact cache"
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert not components.warming
