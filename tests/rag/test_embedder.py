"""The bundled embedder: one text (a search query) takes a shorter path than a batch, and
both must give the same vector."""

from __future__ import annotations

import numpy as np
import pytest

from server.components import Components

pytestmark = pytest.mark.one_pass  # the model, not the database

TEXTS = [
    "How long is a heading rope?",
    "dally",
    "Le cheval a besoin d'un maréchal-ferrant toutes les six semaines. 🐎",
    # Past the model's 256-token limit: both paths truncate it the same way.
    "The heeler ropes both hind feet of the steer after the header turns it. " * 40,
]


def test_one_text_gets_the_vector_a_batch_gives_it(shared_components: Components) -> None:
    embedder = shared_components.embedder
    batch = embedder.encode([*TEXTS, "a second text, so this is the batch path"])
    for i, text in enumerate(TEXTS):
        alone = embedder.encode([text])
        assert alone.shape == (1, embedder.dimension) and alone.dtype == np.float32
        assert np.linalg.norm(alone[0]) == pytest.approx(1.0, abs=1e-5)
        assert np.allclose(alone[0], batch[i], atol=1e-5), text[:40]
