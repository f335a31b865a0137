"""Continuous batching of the bundled model: several answers decoded together, each the same
as llama-cpp-python's own, with slots freed and prompts reused as they should be.

Every test runs the real bundled SmolLM2 GGUF; greedy decoding (temperature 0) makes the
answers comparable token for token.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from llama_cpp import Llama

from server.errors import BackendError, Busy
from server.llm.base import GenerationRequest
from server.llm.batching import COPY_GAIN, _shared, _stop_prefix
from server.llm.llamacpp import LlamaCppBackend, bundled_model_path

pytestmark = pytest.mark.one_pass

QUESTIONS = [
    "What rope length should a beginner header use?",
    "How do I keep my thumb safe when dallying?",
    "How often should a horse see the farrier?",
    "What is the penalty for a knocked barrel?",
]
TOKENS = 40
# Long enough that copying it between slots pays (COPY_GAIN), as RodeoAI's own prompt is.
SYSTEM = (
    "You are RodeoAI, an expert on team roping and rodeo. Answer in two or three plain "
    "sentences for a roper of intermediate skill. Use only what you know to be true about "
    "rodeo rules, horses and equipment, and say so when you are unsure."
)
PENALTY = 1.2


def chat(question: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": question},
    ]


def request(question: str, max_tokens: int = TOKENS) -> GenerationRequest:
    return GenerationRequest(
        messages=chat(question), question=question, max_tokens=max_tokens, temperature=0
    )


async def answer(backend: LlamaCppBackend, req: GenerationRequest) -> str:
    return "".join([piece async for piece in backend.stream(req)])


@pytest.fixture
def backend() -> Iterator[LlamaCppBackend]:
    made = LlamaCppBackend(
        bundled_model_path(), context=2048, threads=2, repeat_penalty=PENALTY, slots=4, queue=4
    )
    made.warm_up()
    yield made
    made.close()


@pytest.fixture(scope="module")
def reference() -> dict[str, str]:
    """llama-cpp-python's own greedy answers, one question at a time."""
    llm = Llama(model_path=str(bundled_model_path()), n_ctx=2048, n_threads=2, verbose=False)
    out = {}
    for question in QUESTIONS:
        reply = llm.create_chat_completion(
            messages=chat(question),  # type: ignore[arg-type]
            max_tokens=TOKENS,
            temperature=0,
            repeat_penalty=PENALTY,
        )
        out[question] = reply["choices"][0]["message"]["content"]  # type: ignore[index]
    return out


def test_one_answer_at_a_time_is_llama_cpp_pythons_own_token_for_token(
    backend: LlamaCppBackend, reference: dict[str, str]
) -> None:
    for question in QUESTIONS:
        assert asyncio.run(answer(backend, request(question))) == reference[question]


def first_word(text: str) -> str:
    return text.split()[0] if text.split() else ""


def test_four_answers_are_decoded_together(
    backend: LlamaCppBackend, reference: dict[str, str]
) -> None:
    """Decoded in one batch, the arithmetic's rounding follows the batch's shape (as in
    llama.cpp's own server), so a greedy answer may part from the one-at-a-time answer at a
    near-tie. Each still opens as its own question's answer: no sequence reads another's."""
    engine = backend._engine

    async def all_four() -> list[str]:
        return await asyncio.gather(*(answer(backend, request(q)) for q in QUESTIONS))

    answers = asyncio.run(all_four())
    assert [first_word(a) for a in answers] == [first_word(reference[q]) for q in QUESTIONS]
    # Together, not in turn: four answers of up to 40 tokens took far fewer decode calls than
    # one per token each (the prompts' first steps, then one shared step per token).
    produced = TOKENS * len(QUESTIONS)
    assert engine.steps < produced / 2, (engine.steps, produced)
    assert backend.describe()["busy"] == 0


def test_a_repeated_question_reuses_its_cached_prompt_and_answers_the_same(
    backend: LlamaCppBackend,
) -> None:
    engine = backend._engine
    first = asyncio.run(answer(backend, request(QUESTIONS[0])))
    read = engine.prompt_evaluated
    again = asyncio.run(answer(backend, request(QUESTIONS[0])))
    assert again == first
    assert engine.prompt_evaluated - read == 1  # only the last prompt token, for its logits
    # Another question shares the system prompt: less than its whole prompt is read.
    other, _ = engine.prompt_tokens(chat(QUESTIONS[1]))
    before = engine.prompt_evaluated
    asyncio.run(answer(backend, request(QUESTIONS[1])))
    assert 1 < engine.prompt_evaluated - before < len(other)


def test_a_client_that_leaves_frees_its_slot(backend: LlamaCppBackend) -> None:
    async def leave_early() -> int:
        got = 0
        stream = backend.stream(request(QUESTIONS[2], max_tokens=200))
        async for _ in stream:
            got += 1
            if got == 3:
                break
        await stream.aclose()  # type: ignore[attr-defined]
        for _ in range(200):  # the decoding thread notices on its next step
            if backend.describe()["busy"] == 0:
                break
            await asyncio.sleep(0.01)
        return got

    assert asyncio.run(leave_early()) == 3
    assert backend.describe()["busy"] == 0
    assert asyncio.run(answer(backend, request(QUESTIONS[3], max_tokens=8)))


def test_max_tokens_bounds_the_answer(backend: LlamaCppBackend) -> None:
    engine = backend._engine
    before = engine.steps
    text = asyncio.run(answer(backend, request(QUESTIONS[1], max_tokens=5)))
    assert text
    assert engine.steps - before <= 5  # the prompt's step gives the first token


def test_a_prompt_longer_than_the_context_is_refused_clearly() -> None:
    small = LlamaCppBackend(
        bundled_model_path(), context=256, threads=2, repeat_penalty=PENALTY, slots=1
    )
    try:
        with pytest.raises(BackendError, match="context holds 256"):
            asyncio.run(answer(small, request("rope " * 400)))
    finally:
        small.close()


def test_a_full_engine_answers_busy_and_a_freed_slot_takes_the_next() -> None:
    one = LlamaCppBackend(
        bundled_model_path(), context=1024, threads=2, repeat_penalty=PENALTY, slots=1, queue=0
    )

    async def two_at_once() -> list[object]:
        return await asyncio.gather(
            answer(one, request(QUESTIONS[0], max_tokens=24)),
            answer(one, request(QUESTIONS[1], max_tokens=24)),
            return_exceptions=True,
        )

    try:
        one.warm_up()
        results = asyncio.run(two_at_once())
        assert sum(isinstance(r, Busy) for r in results) == 1, results
        assert sum(isinstance(r, str) and r != "" for r in results) == 1, results
        assert asyncio.run(answer(one, request(QUESTIONS[2], max_tokens=8)))
    finally:
        one.close()


@pytest.mark.parametrize(
    ("text", "held"),
    [("Hello <|im", 4), ("Hello <", 1), ("Hello", 0), ("a <|im_end", 8), ("<|im_end|", 9)],
)
def test_text_that_may_begin_a_stop_string_is_held_back(text: str, held: int) -> None:
    assert _stop_prefix(text, ("<|im_end|>",)) == held


def test_questions_arriving_together_copy_the_shared_prompt_from_a_warm_slot(
    backend: LlamaCppBackend, reference: dict[str, str]
) -> None:
    engine = backend._engine
    asyncio.run(answer(backend, request(QUESTIONS[0], max_tokens=4)))  # one warm slot
    prompts = [engine.prompt_tokens(chat(q))[0] for q in QUESTIONS]
    before = engine.prompt_evaluated

    async def all_four() -> list[str]:
        return await asyncio.gather(*(answer(backend, request(q)) for q in QUESTIONS))

    answers = asyncio.run(all_four())
    assert [first_word(a) for a in answers] == [first_word(reference[q]) for q in QUESTIONS]
    # Whichever question the decoding thread admits first takes the warm slot; the other
    # three land on cold slots and copy a shared prompt from a slot that holds one.
    assert engine.copies == 3
    # So no question reads the system prompt the four share again. (Which donor each copies
    # from, and so how much more than that each skips, depends on the order they arrive in.)
    common = min(_shared(prompts[0], p) for p in prompts[1:])
    assert common > COPY_GAIN
    assert engine.prompt_evaluated - before <= sum(len(p) - common for p in prompts)


def test_a_damaged_model_file_is_a_backend_error_not_a_crash(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    backend = LlamaCppBackend(broken, context=512, threads=1, repeat_penalty=PENALTY)
    with pytest.raises(BackendError, match=r"could not load broken\.gguf"):
        backend.warm_up()
    with pytest.raises(BackendError, match=r"could not load broken\.gguf"):
        asyncio.run(answer(backend, request(QUESTIONS[0])))
