"""Continuous batching for the in-process llama.cpp model, as llama.cpp's own server does it.

One model and one context hold a sequence per slot. A single thread decodes every running
answer together, one `llama_decode` call per step: each answering sequence adds its next
token, and a new question's prompt fills what is left of the batch.

Why: with one model instance per slot, four questions took turns, and four clients got 0.31x
one stream's rate in total on 2 cores. A decoding step spends most of its time reading the
weights, so four sequences in one step cost little more than one.

A slot keeps its tokens in the cache after its answer ends. The next question goes to the
free slot that shares the longest prefix with it (the system prompt, a conversation so far),
and only the rest of its prompt is evaluated.
"""

from __future__ import annotations

import codecs
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server.errors import BackendError, Busy

log = logging.getLogger(__name__)

# Tokens evaluated per step, shared by the answering sequences (one each) and the prompts
# being read. A larger step reads a long prompt in fewer calls, and stalls the others longer.
STEP_TOKENS = 512
# As llama-cpp-python's own sampling: its defaults, and its penalty window.
PENALTY_LAST_N = 64
TOP_K, TOP_P, MIN_P = 40, 0.95, 0.05
# Copying a slot's cache moves the whole sequence (llama.cpp copies between sequences'
# streams only whole): worth it when it saves reading this many prompt tokens.
COPY_GAIN = 32

Emit = Callable[[str, Any], None]  # ("token", text) | ("done", None) | ("error", exception)


@dataclass
class Job:
    """One answer to generate: its prompt tokens and where its output goes."""

    prompt: list[int]
    max_tokens: int
    temperature: float
    deadline: float
    emit: Emit
    cancelled: threading.Event
    stops: tuple[str, ...] = ()
    fed: int = 0  # prompt tokens already in the cache
    generated: int = 0
    next_token: int = -1  # sampled, to be evaluated on the next step
    held: str = ""  # text held back while it may be the start of a stop string
    sampler: Any = None
    decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace")
    )


@dataclass
class _Slot:
    seq: int
    cached: list[int] = field(default_factory=list)  # tokens in the cache, in order
    job: Job | None = None


class BatchEngine:
    """Owns the model, the context and the decoding thread. `submit` queues a job, or
    raises Busy when every slot and the waiting line are taken."""

    def __init__(
        self,
        model_path: Path,
        *,
        slots: int,
        queue: int,
        context: int,
        threads: int,
        repeat_penalty: float,
    ) -> None:
        self.model_path = model_path
        self.slots = [_Slot(seq) for seq in range(slots)]
        self.queue = queue
        self.context = context  # per sequence
        self.threads = threads
        self.repeat_penalty = repeat_penalty
        self._waiting: deque[Job] = deque()
        self._cond = threading.Condition()
        self._load_lock = threading.Lock()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._model: Any = None
        self._ctx: Any = None
        self._batch: Any = None
        self._format: Any = None
        # Counters the tests and the benchmark read: decode calls, prompt tokens evaluated, and
        # caches copied from one slot to another.
        self.steps = 0
        self.prompt_evaluated = 0
        self.copies = 0

    # -- outside the decoding thread ------------------------------------------------------

    def usage(self) -> dict[str, int]:
        with self._cond:
            return {
                "slots": len(self.slots),
                "busy": sum(slot.job is not None for slot in self.slots),
                "waiting": len(self._waiting),
            }

    def load(self) -> None:
        """Load the model, make the context and start the thread, once."""
        with self._load_lock:
            if self._thread is not None:
                return
            started = time.monotonic()
            try:
                self._model, self._ctx, self._batch, self._format = _open(self)
            except Exception as exc:  # a damaged GGUF: the chain goes on to the next backend
                raise BackendError(f"could not load {self.model_path.name}: {exc}") from exc
            self._thread = threading.Thread(target=self._run, name="llamacpp-batch", daemon=True)
            self._thread.start()
            log.info(
                "loaded %s in %.1fs: %d sequences decoded together, %d tokens of context each",
                self.model_path.name,
                time.monotonic() - started,
                len(self.slots),
                self.context,
            )

    def prompt_tokens(self, messages: list[dict[str, str]]) -> tuple[list[int], tuple[str, ...]]:
        """The chat template applied and tokenized, as llama-cpp-python's chat completion
        does it, with the template's stop strings."""
        self.load()
        result = self._format(messages=messages)
        tokens = self._model.tokenize(
            result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True
        )
        stops = result.stop if isinstance(result.stop, list) else [result.stop]
        return list(tokens), tuple(s for s in stops if s)

    def submit(self, job: Job) -> None:
        if len(job.prompt) >= self.context:
            raise BackendError(
                f"the prompt has {len(job.prompt)} tokens; the model's context holds "
                f"{self.context} (RODEOAI_LLM_CONTEXT)"
            )
        with self._cond:
            if self._closed:
                raise BackendError("the local model is shutting down")
            taken = sum(slot.job is not None for slot in self.slots) + len(self._waiting)
            if taken >= len(self.slots) + self.queue:  # the waiting are not yet in a slot
                raise Busy("the local model is busy; try again shortly", retry_after=5)
            job.sampler = self._sampler(job.temperature)
            self._waiting.append(job)
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _sampler(self, temperature: float) -> Any:
        from llama_cpp._internals import LlamaSampler

        sampler = LlamaSampler()
        sampler.add_penalties(self._model.n_vocab(), PENALTY_LAST_N, self.repeat_penalty, 0, 0)
        if temperature <= 0:
            sampler.add_greedy()
            return sampler
        sampler.add_top_k(TOP_K)
        sampler.add_top_p(TOP_P, 1)
        sampler.add_min_p(MIN_P, 1)
        sampler.add_temp(temperature)
        sampler.add_dist(random.getrandbits(32))
        return sampler

    # -- the decoding thread --------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._closed:
                    break
                self._expire_waiting()
                self._admit()
                running = [slot for slot in self.slots if slot.job is not None]
                if not running:
                    self._cond.wait(timeout=0.5)
                    continue
            try:
                self._step(running)
            except Exception as exc:  # a failed decode ends the answers in it, not the thread
                log.exception("llama.cpp decoding failed")
                for slot in running:
                    self._end(slot, BackendError(f"llama.cpp failed: {exc}"), forget=True)
        closing = BackendError("the local model is shutting down")
        for slot in self.slots:
            self._end(slot, closing)
        with self._cond:
            for job in self._waiting:
                job.emit("error", closing)
            self._waiting.clear()

    def _expire_waiting(self) -> None:
        now = time.monotonic()
        for job in [j for j in self._waiting if j.cancelled.is_set() or now > j.deadline]:
            self._waiting.remove(job)
            job.emit("error", Busy("timed out waiting for the local model", retry_after=5))

    def _admit(self) -> None:
        """Give each waiting job, oldest first, the free slot whose cache shares the most
        with its prompt, and drop the rest of that slot's cache."""
        import llama_cpp

        while self._waiting:
            free = [slot for slot in self.slots if slot.job is None]
            if not free:
                return
            job = self._waiting.popleft()
            shared = {slot.seq: _shared(slot.cached, job.prompt) for slot in self.slots}
            slot = max(free, key=lambda s: shared[s.seq])
            donor = max(self.slots, key=lambda s: shared[s.seq])
            if shared[donor.seq] > shared[slot.seq] + COPY_GAIN:
                # Another slot, answering or not, holds more of this prompt (the system
                # prompt, when four questions arrive at once): copy its whole sequence over.
                llama_cpp.llama_memory_seq_cp(self._ctx.memory, donor.seq, slot.seq, -1, -1)
                slot.cached = list(donor.cached)
                shared[slot.seq] = shared[donor.seq]
                self.copies += 1
            # At least the last prompt token is evaluated again: its logits start the answer.
            keep = min(shared[slot.seq], len(job.prompt) - 1)
            if not llama_cpp.llama_memory_seq_rm(self._ctx.memory, slot.seq, keep, -1):
                keep = 0
                llama_cpp.llama_memory_seq_rm(self._ctx.memory, slot.seq, -1, -1)
            slot.cached = slot.cached[:keep]
            job.fed = keep
            slot.job = job

    def _step(self, running: list[_Slot]) -> None:
        import llama_cpp

        batch = self._batch.batch
        batch.n_tokens = 0
        outputs: list[tuple[_Slot, int]] = []

        def add(slot: _Slot, token: int, logits: bool) -> None:
            i = batch.n_tokens
            batch.token[i] = token
            batch.pos[i] = len(slot.cached)
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = slot.seq
            batch.logits[i] = logits
            batch.n_tokens = i + 1
            slot.cached.append(token)
            if logits:
                outputs.append((slot, i))

        now = time.monotonic()
        for slot in running:
            job = slot.job
            assert job is not None
            if job.cancelled.is_set() or now > job.deadline:
                self._end(slot, None)  # the caller has gone or given up: free the slot
            elif job.fed == len(job.prompt):
                add(slot, job.next_token, True)
        for slot in running:  # prompts take what the answering sequences left of the step
            job = slot.job
            if job is None or job.fed == len(job.prompt):
                continue
            take = job.prompt[job.fed : job.fed + STEP_TOKENS - batch.n_tokens]
            for k, token in enumerate(take):
                add(slot, token, job.fed + k == len(job.prompt) - 1)
            job.fed += len(take)
            self.prompt_evaluated += len(take)
        if batch.n_tokens == 0:
            return
        code = llama_cpp.llama_decode(self._ctx.ctx, batch)
        self.steps += 1
        if code != 0:
            raise RuntimeError(f"llama_decode returned {code}")
        for slot, index in outputs:
            job = slot.job
            assert job is not None
            self._take(slot, job, job.sampler.sample(self._ctx, index))

    def _take(self, slot: _Slot, job: Job, token: int) -> None:
        """Stream a sampled token's text, or end the answer."""
        import llama_cpp

        if llama_cpp.llama_vocab_is_eog(self._model.vocab, token):
            self._end(slot, None)
            return
        job.generated += 1
        job.held += job.decoder.decode(self._model.detokenize([token]))
        stop = min((i for i in (job.held.find(s) for s in job.stops) if i >= 0), default=-1)
        if stop >= 0:
            job.held = job.held[:stop]
            self._end(slot, None)
            return
        if job.generated >= job.max_tokens or len(slot.cached) + 1 >= self.context:
            self._end(slot, None)
            return
        keep = _stop_prefix(job.held, job.stops)
        if len(job.held) > keep:
            job.emit("token", job.held[: len(job.held) - keep])
            job.held = job.held[len(job.held) - keep :]
        job.next_token = token

    def _end(self, slot: _Slot, error: Exception | None, *, forget: bool = False) -> None:
        """Finish the slot's job. Its cache stays for the next prompt that shares it,
        unless the decode failed."""
        import llama_cpp

        job, slot.job = slot.job, None
        if forget:
            llama_cpp.llama_memory_seq_rm(self._ctx.memory, slot.seq, -1, -1)
            slot.cached = []
        if job is None:
            return
        if error is not None:
            job.emit("error", error)
            return
        job.held += job.decoder.decode(b"", final=True)
        if job.held and not job.cancelled.is_set():
            job.emit("token", job.held)
        job.emit("done", None)


def _shared(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _stop_prefix(text: str, stops: tuple[str, ...]) -> int:
    """How many trailing characters of `text` could begin a stop string."""
    best = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:n]):
                best = n
                break
    return best


def _open(engine: BatchEngine) -> tuple[Any, Any, Any, Any]:
    """The model, a context with one sequence per slot, a batch, and the chat formatter."""
    import llama_cpp
    from llama_cpp import _internals, llama_chat_format
    from llama_cpp._logger import set_verbose

    set_verbose(False)
    llama_cpp.llama_backend_init()
    model = _internals.LlamaModel(
        path_model=str(engine.model_path),
        params=llama_cpp.llama_model_default_params(),
        verbose=False,
    )
    params = llama_cpp.llama_context_default_params()
    params.n_ctx = engine.context * len(engine.slots)
    params.n_seq_max = len(engine.slots)
    params.kv_unified = False  # each sequence its own share of the cache: `context` tokens
    params.n_batch = params.n_ubatch = STEP_TOKENS
    params.n_threads = params.n_threads_batch = engine.threads
    params.no_perf = True
    # As llama-cpp-python sets it; the default (auto) turns it on, and answers differ.
    params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
    context = _internals.LlamaContext(model=model, params=params, verbose=False)
    batch = _internals.LlamaBatch(n_tokens=STEP_TOKENS, embd=0, n_seq_max=1, verbose=False)
    return model, context, batch, _formatter(model, llama_chat_format)


def _formatter(model: Any, chat_format: Any) -> Any:
    """The GGUF's own chat template, as llama-cpp-python uses it when no format is named;
    llama-2's format for a GGUF without one, as llama-cpp-python falls back to."""
    template = model.metadata().get("tokenizer.chat_template")
    if not template:
        return chat_format.format_llama2
    eos, bos = model.token_eos(), model.token_bos()
    return chat_format.Jinja2ChatFormatter(
        template=template,
        eos_token=model.token_get_text(eos) if eos != -1 else "",
        bos_token=model.token_get_text(bos) if bos != -1 else "",
        stop_token_ids=[eos],
    )
