"""Builds the long-lived parts (database, embedder, index, retriever, backends) from settings.

The web app and the CLI share this, so both see the same data in the same way.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from sqlalchemy import Engine

from server.accounts.oauth import OAuthService
from server.accounts.ratelimit import RateLimiter
from server.accounts.security import AccessTokens, Passwords, load_signing_key
from server.accounts.service import AccountService
from server.billing.payments import Payments
from server.billing.plans import BillingService
from server.chat.conversations import ConversationStore
from server.chat.pipeline import ChatService
from server.chat.recording import AnswerObserver
from server.config import Settings
from server.db import make_engine
from server.errors import AppError
from server.learning.analytics import AnalyticsService
from server.learning.experiments import ExperimentService
from server.learning.feedback import FeedbackService
from server.learning.finetune import FinetuneExporter
from server.learning.finetune_jobs import FinetuneJobs
from server.learning.privacy import AnswerPrivacy
from server.learning.review import ReviewService
from server.llm import catalog
from server.llm.base import Backend
from server.llm.chain import FailoverChain, SkipObserver
from server.llm.extractive import ExtractiveBackend
from server.llm.llamacpp import LlamaCppBackend, resolve_model_path
from server.llm.ollama_backend import OllamaBackend
from server.llm.openai_backend import OpenAIBackend
from server.notify import MailConfig, MailSender, Outbox, SmtpTransport
from server.rag.bm25 import Bm25Cache
from server.rag.embedder import Embedder, load_embedder
from server.rag.ingest import IngestObserver, Ingestor
from server.rag.pgvector_store import PgVectorStore
from server.rag.retriever import Retriever
from server.rag.vector_index import VectorIndex
from server.rag.vector_store import VectorStore
from server.startup import Shutdown, Startup, StartupCancelled

log = logging.getLogger(__name__)


@dataclass
class Observers:
    """Listeners the interfaces hang on the domains (the Prometheus metrics do): answers
    recorded, backends skipped, ingestions run. The domains call plain functions and never
    learn who listens; add to these lists before the first question or ingestion."""

    answers: list[AnswerObserver] = field(default_factory=list)
    skips: list[SkipObserver] = field(default_factory=list)
    ingests: list[IngestObserver] = field(default_factory=list)


@dataclass
class Components:
    settings: Settings
    startup: Startup = field(default_factory=Startup)
    observers: Observers = field(default_factory=Observers)
    _warmer: threading.Thread | None = field(default=None, init=False, repr=False)

    @cached_property
    def shutdown(self) -> Shutdown:
        return Shutdown(self.settings.shutdown_grace_s)

    @cached_property
    def engine(self) -> Engine:
        return make_engine(self.settings.engine_url)

    def close(self) -> None:
        """Stop background work, then give the database connections back (a PostgreSQL
        server counts its clients). The fact-cache warm-up is joined, not left running:
        a thread inside torch while the interpreter exits can abort the process."""
        self.startup.stop.set()
        if self._warmer is not None:
            self._warmer.join(timeout=30)
        if "chain" in self.__dict__:  # the local model's decoding thread, for the same reason
            self.chain.close()
        if "engine" in self.__dict__:
            self.engine.dispose()

    @cached_property
    def embedder(self) -> Embedder:
        return load_embedder(self.settings.embedder_path)

    @cached_property
    def unopened_index(self) -> VectorStore:
        """FAISS in this process, or pgvector in the database (no FAISS file is then read
        or written)."""
        if self.settings.vector_store == "pgvector":
            return PgVectorStore(
                self.engine,
                embedder=self.embedder.name,
                dimension=self.embedder.dimension,
                ann_min_chunks=self.settings.vector_ann_min_chunks,
            )
        return VectorIndex(
            self.settings.index_dir,
            embedder=self.embedder.name,
            dimension=self.embedder.dimension,
            ann_min_chunks=self.settings.vector_ann_min_chunks,
        )

    @cached_property
    def index(self) -> VectorStore:
        index = self.unopened_index
        outcome = index.open(self.engine)
        log.info(
            "vector index (%s) %s: %d vectors, generation %d",
            index.kind,
            outcome,
            index.count,
            index.generation,
        )
        return index

    @cached_property
    def ingestor(self) -> Ingestor:
        return self.make_ingestor(self.index)

    def make_ingestor(self, index: VectorStore) -> Ingestor:
        return Ingestor(
            self.engine,
            self.embedder,
            index,
            knowledge_dir=self.settings.knowledge_dir,
            chunk_tokens=self.settings.chunk_tokens,
            chunk_overlap=self.settings.chunk_overlap,
            max_file_bytes=self.settings.max_file_bytes,
            uploads_dir=Path(self.settings.data_dir) / "uploads",
            observers=self.observers.ingests,
        )

    @cached_property
    def retriever(self) -> Retriever:
        return Retriever(
            self.engine,
            self.embedder,
            self.index,
            candidates=self.settings.candidates,
            rrf_k=self.settings.rrf_k,
            bm25=Bm25Cache(self.engine) if self.settings.lexical_index == "memory" else None,
        )

    @cached_property
    def chain(self) -> FailoverChain:
        backends: list[Backend] = []
        for name in self.settings.backend_order:
            if name == "llamacpp":
                try:
                    backends.append(self.llamacpp())
                except AppError as exc:  # a missing model must not take the box down
                    log.warning("llamacpp backend disabled: %s", exc.message)
            elif name == "extractive":
                backends.append(ExtractiveBackend())
            elif name == "openai":
                backends.append(self._openai())
            elif name == "ollama":
                backends.append(
                    OllamaBackend(
                        host=self.settings.ollama_host,
                        model=self.settings.ollama_model,
                        timeout=self.settings.generation_timeout_s,
                    )
                )
        return FailoverChain(
            backends,
            cooldown_s=self.settings.backend_cooldown_s,
            first_token_timeout_s=self.settings.first_token_timeout_s,
            observers=self.observers.skips,
        )

    def _openai(self) -> OpenAIBackend:
        s = self.settings
        # A base URL without a key is a local OpenAI-compatible server that wants none.
        key = s.openai_api_key.get_secret_value() if s.openai_api_key else "not-needed"
        return OpenAIBackend(api_key=key, model=s.openai_model, base_url=s.openai_base_url)

    def llamacpp(self) -> LlamaCppBackend:
        s = self.settings
        path = resolve_model_path(s.llm_model, s.models_dir)
        # A pulled catalogue model brings the repeat penalty that suits it (the default is
        # tuned for the tiny bundled model), unless the operator set one. Its chat template
        # and stop tokens come from the GGUF's own metadata (llama-cpp-python reads them).
        entry = catalog.for_file(path)
        penalty = s.llm_repeat_penalty
        if entry and entry.repeat_penalty and "llm_repeat_penalty" not in s.model_fields_set:
            penalty = entry.repeat_penalty
        return LlamaCppBackend(
            path,
            context=s.llm_context,
            threads=s.llm_threads,
            repeat_penalty=penalty,
            slots=s.llm_slots,
            queue=s.llm_queue,
        )

    @cached_property
    def limiter(self) -> RateLimiter:
        return RateLimiter(self.settings.rate_limit_storage)

    @cached_property
    def accounts(self) -> AccountService:
        s = self.settings
        key = load_signing_key(
            s.secret_key.get_secret_value() if s.secret_key else None, s.data_dir
        )
        tokens = AccessTokens(
            key, issuer=s.jwt_issuer, audience=s.jwt_audience, minutes=s.access_token_minutes
        )
        passwords = Passwords(concurrency=s.hash_concurrency)
        return AccountService(self.engine, s, passwords, tokens, self.limiter, mail=self.mail)

    @cached_property
    def mail(self) -> Outbox:
        """The e-mail outbox; with no SMTP host it queues nothing."""
        return Outbox(self.engine, MailConfig.from_settings(self.settings))

    def start_mail(self) -> MailSender | None:
        """With SMTP on, this worker's sender thread. It opens the outbox once the loader is
        done, so the engine is never built by two threads at once."""
        if not self.settings.mail_enabled:
            return None
        sender = MailSender(
            lambda: self.mail,
            SmtpTransport.from_settings(self.settings),
            poll_s=self.settings.mail_poll_s,
            after=self.startup.done,
        )
        sender.start()
        return sender

    @cached_property
    def oauth(self) -> OAuthService:
        return OAuthService(self.engine, self.settings, self.accounts)

    @cached_property
    def chat(self) -> ChatService:
        return ChatService(
            self.retriever,
            self.chain,
            self.embedder,
            self.settings,
            self.engine,
            self.conversations,
            self.billing,
            self.experiments,
            answer_observers=self.observers.answers,
            cut=self.shutdown.cut,
        )

    @cached_property
    def billing(self) -> BillingService:
        return BillingService(self.engine, self.settings)

    @cached_property
    def payments(self) -> Payments:
        return Payments(self.billing, mail=self.mail)

    @cached_property
    def conversations(self) -> ConversationStore:
        return ConversationStore(self.engine)

    @cached_property
    def feedback(self) -> FeedbackService:
        return FeedbackService(self.engine)

    @cached_property
    def review(self) -> ReviewService:
        return ReviewService(self.engine)

    @cached_property
    def experiments(self) -> ExperimentService:
        return ExperimentService(self.engine)

    @cached_property
    def analytics(self) -> AnalyticsService:
        return AnalyticsService(self.engine, rrf_k=self.settings.rrf_k)

    @cached_property
    def finetune(self) -> FinetuneExporter:
        return FinetuneExporter(self.engine)

    @cached_property
    def finetune_jobs(self) -> FinetuneJobs:
        return FinetuneJobs(self.settings, self.experiments)

    @cached_property
    def privacy(self) -> AnswerPrivacy:
        return AnswerPrivacy(self.engine, self.settings.answer_retention_days)

    def chunk_total(self) -> int:
        from server.db import counts

        return counts(self.engine)[1]

    def load_starter_knowledge(self) -> None:
        """First run: fill an empty database from the knowledge folder. Several workers
        start at once, on this machine or others: the ingestion lock lets one load it, and
        the rest then find it loaded."""
        from server.db import counts, ingest_lock

        if not self.settings.autoload_knowledge:
            return
        folder = self.settings.knowledge_dir
        with ingest_lock(self.engine):  # replicas on other machines share it too
            documents, _ = counts(self.engine)
            if documents:
                return
            if not folder.is_dir():
                log.warning("no documents loaded and knowledge folder %s does not exist", folder)
                return
            log.info("first run: loading starter knowledge from %s", folder)
            summary = self.ingestor.ingest_unlocked(
                [folder],
                progress=lambda path, done, total: self.startup.step(
                    "loading knowledge", f"{done} of {total} files"
                ),
            )
            log.info("starter knowledge: %s", summary.line())

    @property
    def warming(self) -> bool:
        """Whether the fact-cache warm-up still runs (it takes CPU for seconds to minutes)."""
        return self._warmer is not None and self._warmer.is_alive()

    def _warm_fact_cache(self) -> None:
        """The knowledge's sentences into the fact cache, after start-up, in small batches."""
        from sqlalchemy import text

        from server.chat.prompting import warm_fact_cache

        started = time.monotonic()
        try:
            with self.engine.connect() as connection:
                rows = connection.execute(text("SELECT text FROM chunk ORDER BY id"))
                texts = (row[0] for row in rows.yield_per(500))
                done = warm_fact_cache(texts, self.embedder, self.startup.stop)
        except Exception:  # only a cache: questions encode what it lacks
            log.exception("could not warm the fact cache")
            return
        log.info("fact cache: %d sentences in %.1f s", done, time.monotonic() - started)

    def start(self) -> None:
        """Open the knowledge base and warm the models, in a loader thread: knowledge first
        (another worker may be loading it under the lock, and an index opened before it
        finished would start out stale), then the index, then the first encode and the
        backends' warm-up, so the first question does not pay for torch's start-up."""
        startup = self.startup
        try:
            startup.step("opening index")
            self.load_starter_knowledge()
            self.index  # noqa: B018  (loads, or rebuilds when missing or corrupt)
            startup.step("warming up")
            self.embedder.encode(["warm up"])
            for backend in self.chain.backends:
                warm_up = getattr(backend, "warm_up", None)
                if warm_up:
                    try:
                        warm_up()
                    except AppError as exc:
                        log.warning("backend %s is unavailable: %s", backend.name, exc.message)
            # Last: a large base's background build would slow the models' warm-up (the GIL).
            if self.retriever.bm25 is not None:
                self.retriever.bm25.open()
            if self.settings.fact_cache_warmup:
                self._warmer = threading.Thread(target=self._warm_fact_cache, daemon=True)
                self._warmer.start()
        except StartupCancelled:
            startup.finish(error="shut down while starting")
            return
        except Exception as exc:
            log.exception("start-up failed")
            message = exc.message if isinstance(exc, AppError) else f"{type(exc).__name__}: {exc}"
            startup.finish(error=message)
            return
        startup.finish()
        log.info("ready")
