"""One settings object for the whole app: RODEOAI_* environment variables and `.env`.

This module imports nothing from the rest of the package so everything else can depend on it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SkillLevel = Literal["beginner", "intermediate", "advanced", "pro"]
KNOWN_BACKENDS = ("openai", "ollama", "llamacpp", "extractive")


def starter_knowledge() -> Path:
    """The starter knowledge of this install: the checkout's `knowledge/` beside the package
    (a source or editable install), else the copy a wheel installs under share/rodeoai."""
    beside = Path(__file__).resolve().parent.parent / "knowledge"
    for candidate in (beside, Path(sys.prefix) / "share" / "rodeoai" / "knowledge"):
        if candidate.is_dir():
            return candidate
    return beside


class Settings(BaseSettings):
    """Every tunable of RodeoAI. See `.env.example` for the documented list."""

    model_config = SettingsConfigDict(
        env_prefix="RODEOAI_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        env_ignore_empty=True,  # "RODEOAI_X=" in .env means "use the default"
    )

    # --- where things live -------------------------------------------------------------
    data_dir: Path = Field(
        default=Path("."),
        description="Folder holding the SQLite database (rodeoai.db) and the FAISS index (index/).",
    )
    knowledge_dir: Path = Field(
        default_factory=starter_knowledge,
        description="Knowledge loaded on first run; by default the starter knowledge of this "
        "install, wherever the command runs.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the database, e.g. postgresql+psycopg://user:pw@host/db."
        " Empty: the SQLite file rodeoai.db in data_dir.",
    )
    models_dir: Path = Field(default=Path("models"), description="Folder of extra GGUF files.")
    autoload_knowledge: bool = Field(
        default=True, description="Ingest knowledge_dir at start-up when the database is empty."
    )

    # --- embedded models ---------------------------------------------------------------
    embedder_path: str | None = Field(
        default=None,
        description="Local sentence-transformers folder. Empty: the bundled all-MiniLM-L6-v2.",
    )
    llm_model: str | None = Field(
        default=None,
        description="A .gguf path, or a file name in models_dir. Empty: bundled SmolLM2-135M.",
    )
    llm_context: int = Field(default=2048, ge=512, le=131072)
    llm_threads: int = Field(default=0, ge=0, description="0 means one per CPU core.")
    llm_max_tokens: int = Field(default=256, ge=16, le=4096)
    llm_temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    llm_repeat_penalty: float = Field(default=1.2, ge=1.0, le=2.0)
    llm_slots: int = Field(
        default=4,
        ge=1,
        le=64,
        description="Answers the local model decodes together, each with its own context.",
    )
    llm_queue: int = Field(default=8, ge=0, description="Requests allowed to wait for a slot.")
    backends: str | None = Field(
        default=None,
        description="Failover order of openai, ollama, llamacpp, extractive. Empty: "
        "openai,llamacpp,extractive with an OpenAI key, else llamacpp,extractive.",
    )
    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = Field(
        default=None, description="Any OpenAI-compatible server; empty: api.openai.com."
    )
    openai_model: str = Field(default="gpt-4o", description="Or a fine-tuned id, ft:...")
    finetune_base_model: str = Field(
        default="gpt-4o-mini-2024-07-18",
        description="The OpenAI model `rodeoai finetune submit` fine-tunes.",
    )
    ollama_host: str = "http://127.0.0.1:11434"
    ollama_model: str = "llama3.2"
    generation_timeout_s: float = Field(default=120.0, gt=0)
    first_token_timeout_s: float = Field(
        default=30.0, gt=0, description="A backend silent this long is skipped for the next."
    )
    backend_cooldown_s: float = Field(default=30.0, ge=0)

    # --- retrieval ---------------------------------------------------------------------
    chunk_tokens: int = Field(default=180, ge=32, le=512)
    max_file_bytes: int = Field(
        default=32 * 1024 * 1024,
        ge=1024,
        description="Larger files are skipped at ingestion, checked before they are read.",
    )
    chunk_overlap: int = Field(default=40, ge=0, le=256)
    top_k: int = Field(default=4, ge=1, le=20, description="Chunks placed in the prompt.")
    candidates: int = Field(default=40, ge=5, le=500, description="Per-retriever pool for RRF.")
    rrf_k: int = Field(default=60, ge=1)
    vector_ann_min_chunks: int = Field(
        default=50_000,
        ge=1,
        description="From this many chunks the vector index is approximate (a FAISS inverted "
        "file, recall@10 about 0.95 or better, see make bench) instead of exact.",
    )
    vector_store: Literal["faiss", "pgvector"] = Field(
        default="faiss",
        description="faiss: a FAISS index in each worker's memory, saved under data_dir/index "
        "(fast; each replica holds a copy, about 1.5 GB per million 384-d chunks). pgvector: "
        "the vectors in PostgreSQL under an HNSW index that every replica shares (needs "
        "RODEOAI_DATABASE_URL on PostgreSQL with the pgvector extension; filled from the stored "
        "embeddings at the first start, nothing is re-encoded).",
    )
    fact_cache_warmup: bool = Field(
        default=True,
        description="After start-up, encode the knowledge's sentences into the fact cache in "
        "the background (small batches, so questions never wait long), so the first question "
        "on a passage does not pay for them: about 0.2 s less to the first token.",
    )
    lexical_index: Literal["memory", "database"] = Field(
        default="memory",
        description="memory: an in-memory BM25 copy of the chunks, rebuilt in the background "
        "when they change, with the database's own index (FTS5 or tsvector) answering until "
        "it is; database: always the database's index (slower on large knowledge bases).",
    )
    context_token_budget: int = Field(default=900, ge=100)
    history_token_budget: int = Field(
        default=300, ge=0, description="Earlier turns of a conversation put in the prompt."
    )
    facts_in_prompt: int = Field(
        default=6, ge=1, le=30, description="Best source sentences given to the model."
    )
    evidence_points: int = Field(
        default=3, ge=0, le=10, description="Source sentences quoted under each answer."
    )
    grounding_check: bool = Field(
        default=True,
        description="Drop each answer sentence the sources do not support (its quantities, "
        "words and meaning are checked against the facts); answer from the quoted sources "
        "when nothing is left.",
    )

    default_skill_level: SkillLevel = Field(
        default="intermediate", description="Depth of answers when the request gives none."
    )

    # --- the OpenAI- and Ollama-compatible APIs (/v1, /ollama) -------------------------
    detect_client_tasks: bool = Field(
        default=True,
        description="Recognise a chat front end's background tasks (Open WebUI's titles, "
        "tags, follow-ups and search queries; LibreChat's titles) and answer them without "
        "the LLM, a quota debit or an answer record. Off: only requests naming the model "
        "rodeoai-tasks are answered as tasks.",
    )
    sources_footer: bool = Field(
        default=True,
        description="End each answer's text with a numbered Sources list (title and "
        "location of each cited passage), for clients that show only the text.",
    )

    # --- accounts and sign-in ----------------------------------------------------------
    access_mode: Literal["open", "accounts"] = Field(
        default="open",
        description="open: guests may chat (with guest limits). accounts: sign-in required.",
    )
    secret_key: SecretStr | None = Field(
        default=None,
        description="Signs access tokens. Empty: generated once into DATA_DIR/secret.key.",
    )
    public_url: str = Field(
        default="http://127.0.0.1:8000", description="Base URL users reach; OAuth redirects."
    )
    jwt_issuer: str = "rodeoai"
    jwt_audience: str = "rodeoai-api"
    access_token_minutes: int = Field(default=15, ge=1, le=60)
    refresh_token_days: int = Field(default=30, ge=1, le=365)
    hash_concurrency: int = Field(default=2, ge=1, description="argon2 hashes at once.")
    min_password_length: int = Field(default=10, ge=8)
    trust_forwarded_for: bool = Field(
        default=False, description="Take the client IP from X-Forwarded-For (behind a proxy)."
    )
    cors_origins: list[str] = Field(default=[], description="Browser origins allowed (CORS).")
    # Rate limits use the `limits` notation, e.g. "30/minute"; storage "memory://" or redis://.
    rate_limit_storage: str = "memory://"
    login_ip_limit: str = "60/minute"
    login_account_limit: str = Field(
        default="100/hour",
        description="Sign-in attempts per account (so at most this many failures), then a "
        "cool-down until the window passes.",
    )
    register_ip_limit: str = "20/hour"
    refresh_ip_limit: str = "120/minute"
    chat_user_limit: str = "30/minute"
    chat_guest_limit: str = "10/minute"
    search_user_limit: str = Field(
        default="300/minute", description="/api/search and the embeddings APIs, per user."
    )
    search_guest_limit: str = Field(default="60/minute", description="The same, per guest address.")
    # OAuth / OpenID Connect providers (each on when its client id is set).
    oauth_google_client_id: str | None = None
    oauth_google_client_secret: SecretStr | None = None
    oauth_github_client_id: str | None = None
    oauth_github_client_secret: SecretStr | None = None
    oauth_oidc_name: str = Field(default="oidc", description="URL name of the generic provider.")
    oauth_oidc_discovery_url: str | None = Field(
        default=None, description="Issuer's /.well-known/openid-configuration URL."
    )
    oauth_oidc_client_id: str | None = None
    oauth_oidc_client_secret: SecretStr | None = None

    # --- billing (Stripe). No key: billing is off and everyone has default_plan ----------
    stripe_api_key: SecretStr | None = None
    stripe_webhook_secret: SecretStr | None = None
    stripe_api_base: str | None = Field(
        default=None, description="Another Stripe API address (a test server such as localstripe)."
    )
    stripe_pro_plan_id: str | None = Field(
        default=None, description="The Stripe plan for Pro; `rodeoai billing sync` creates one."
    )
    stripe_publishable_key: str | None = Field(
        default=None,
        pattern=r"^pk_(test|live)_[A-Za-z0-9]+$",
        description="Stripe's publishable key: the billing page then takes cards with "
        "Stripe.js (loaded from js.stripe.com on that page only). Unset: no card form.",
    )
    webhook_tolerance_s: int = Field(default=300, ge=30, le=3600)
    default_plan: Literal["free", "pro"] = Field(
        default="free", description="Plan of every user without a subscription."
    )
    currency: str = "usd"
    # Daily questions: -1 = unlimited, 0 = none (credits only), N = N a day.
    free_daily_messages: int = Field(default=20, ge=-1, description="-1 = unlimited, 0 = none.")
    pro_daily_messages: int = Field(default=-1, ge=-1, description="-1 = unlimited, 0 = none.")
    pro_price_cents: int = Field(default=1500, ge=50)
    credit_pack_credits: int = Field(default=100, ge=1)
    credit_pack_price_cents: int = Field(default=500, ge=50)
    guest_daily_messages: int = Field(
        default=-1,
        ge=-1,
        description="Open mode, per address; -1 = unlimited (rate limits apply), 0 = none.",
    )

    # --- e-mail (SMTP). No host: no e-mail, and an administrator hands out reset links ---
    smtp_host: str | None = Field(
        default=None,
        description="SMTP server for password resets, welcomes, receipts and billing notices. "
        "Empty: e-mail is off and `rodeoai users reset-link` hands out reset links.",
    )
    smtp_port: int | None = Field(
        default=None, ge=1, le=65535, description="Empty: 465 for ssl, 587 for starttls, else 25."
    )
    smtp_tls: Literal["none", "starttls", "ssl"] = Field(
        default="starttls",
        description="starttls: upgrade the connection (port 587); ssl: TLS from the start "
        "(port 465); none: plain text, for a relay on this machine only.",
    )
    smtp_username: str | None = Field(default=None, description="Empty: no SMTP login.")
    smtp_password: SecretStr | None = Field(default=None, description="Never logged.")
    smtp_from: str | None = Field(
        default=None,
        description="Sender, e.g. 'RodeoAI <rodeo@club.example>'; required with a host.",
    )
    smtp_timeout_s: float = Field(default=30.0, gt=0, description="Per SMTP command.")
    mail_poll_s: float = Field(
        default=5.0,
        gt=0,
        description="How often each worker looks for mail to send; mail queued by the same "
        "worker goes at once.",
    )
    mail_retry_s: float = Field(
        default=60.0,
        gt=0,
        description="Wait before the first retry of a mail the server did not take; doubled "
        "each time, up to an hour.",
    )
    mail_max_attempts: int = Field(
        default=10, ge=1, description="Tries before a mail is marked failed for the admin."
    )
    mail_lease_s: float = Field(
        default=600.0,
        gt=0,
        description="A mail claimed by a worker that died while sending it is tried again "
        "after this long (it may then arrive twice, with the same Message-ID).",
    )

    # --- the learning loop -------------------------------------------------------------
    answer_retention_days: int = Field(
        default=0,
        ge=0,
        description="Delete recorded answers (with their feedback and reviews) after this "
        "many days; 0 keeps them all.",
    )

    # --- HTTP --------------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    max_body_bytes: int = Field(default=1_000_000, ge=1024)
    startup_wait_s: float = Field(
        default=30.0,
        ge=0,
        description="While the server loads, a question waits this long, then gets 503.",
    )
    max_question_chars: int = Field(default=4000, ge=10)
    max_messages: int = Field(default=50, ge=1)
    shutdown_grace_s: float = Field(
        default=10.0,
        ge=0,
        le=300,
        description="On SIGTERM, answers already streaming get this long to finish; then "
        "each ends where it is, as a shorter answer that is still recorded.",
    )
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = Field(
        default="text", description="text, or json: one JSON object per line, with request ids."
    )
    log_json: bool = Field(default=False, description="The same as RODEOAI_LOG_FORMAT=json.")
    metrics_enabled: bool = Field(
        default=True, description="Serve Prometheus metrics at GET /metrics."
    )
    metrics_token: SecretStr | None = Field(
        default=None,
        description="When set, GET /metrics needs `Authorization: Bearer <token>`; unset, "
        "it is open (a scraper on the LAN).",
    )

    @field_validator("backends")
    @classmethod
    def _known_backends(cls, value: str | None) -> str | None:
        if value is None:
            return None
        names = [n.strip() for n in value.split(",") if n.strip()]
        unknown = set(names) - set(KNOWN_BACKENDS)
        if not names or unknown:
            raise ValueError(
                f"unknown backend(s) {sorted(unknown)}; known: {', '.join(KNOWN_BACKENDS)}"
            )
        return ",".join(names)

    @field_validator("chunk_overlap")
    @classmethod
    def _overlap_below_size(cls, value: int, info: object) -> int:
        size = getattr(info, "data", {}).get("chunk_tokens", 200)
        if value >= size:
            raise ValueError("chunk_overlap must be smaller than chunk_tokens")
        return value

    @model_validator(mode="after")
    def _vectors_need_postgres(self) -> Settings:
        if self.vector_store == "pgvector" and self.engine_url.startswith("sqlite"):
            raise ValueError(
                "RODEOAI_VECTOR_STORE=pgvector keeps the vectors in PostgreSQL, but the "
                "database is SQLite: set RODEOAI_DATABASE_URL=postgresql+psycopg://... or "
                "RODEOAI_VECTOR_STORE=faiss"
            )
        return self

    @model_validator(mode="after")
    def _mail_complete(self) -> Settings:
        if self.smtp_host and not self.smtp_from:
            raise ValueError("RODEOAI_SMTP_FROM (the sender address) is needed with a SMTP host")
        # One send is about ten SMTP commands, each allowed smtp_timeout_s: a lease shorter
        # than that would let a second worker send a mail that is still on its way.
        if self.mail_lease_s < 10 * self.smtp_timeout_s:
            raise ValueError("mail_lease_s must be at least 10 times smtp_timeout_s")
        return self

    @property
    def mail_enabled(self) -> bool:
        return bool(self.smtp_host)

    @property  # not cached: model_copy(update=...) must not see a stale order
    def backend_order(self) -> list[str]:
        if self.backends:
            return self.backends.split(",")
        if self.openai_api_key:
            return ["openai", "llamacpp", "extractive"]
        return ["llamacpp", "extractive"]

    @field_validator(
        "login_ip_limit",
        "login_account_limit",
        "register_ip_limit",
        "refresh_ip_limit",
        "chat_user_limit",
        "chat_guest_limit",
        "search_user_limit",
        "search_guest_limit",
    )
    @classmethod
    def _rate_limit_syntax(cls, value: str) -> str:
        from limits import parse

        try:
            parse(value)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a rate limit like '30/minute'") from exc
        return value

    @property
    def database_path(self) -> Path:
        return self.data_dir / "rodeoai.db"

    @property
    def engine_url(self) -> str:
        """The database to use: RODEOAI_DATABASE_URL, else the SQLite file in data_dir."""
        return self.database_url or f"sqlite:///{self.database_path}"

    @property
    def index_dir(self) -> Path:
        return self.data_dir / "index"

    @property
    def json_logs(self) -> bool:
        return self.log_format == "json" or self.log_json

    def unsafe(self, *, workers: int = 1) -> list[str]:
        """Settings that work but are risky, in words an operator can act on; `rodeoai
        serve` logs each as a warning at start-up."""
        warnings = []
        if self.secret_key is None and workers > 1:
            warnings.append(
                "RODEOAI_SECRET_KEY is not set: this box's workers share the key generated in "
                "DATA_DIR/secret.key, but replicas on other machines would each make their own "
                "and refuse each other's sign-ins; set one key everywhere"
            )
        if self.access_mode == "open" and self.stripe_api_key is not None:
            warnings.append(
                "open mode with Stripe on: guests answer without accounts, so nobody can buy a "
                "plan or credits; set RODEOAI_ACCESS_MODE=accounts to sell subscriptions"
            )
        if workers > 1 and self.rate_limit_storage.startswith("memory"):
            warnings.append(
                f"{workers} workers with RODEOAI_RATE_LIMIT_STORAGE=memory://: each worker "
                "counts on its own, so every limit is in effect multiplied by the workers; "
                "set RODEOAI_RATE_LIMIT_STORAGE=redis://... to share them"
            )
        if "*" in self.cors_origins:
            warnings.append(
                "RODEOAI_CORS_ORIGINS allows every origin (*): any web page a user opens can "
                "call this box's API; list the front ends' origins instead"
            )
        if self.host in {"0.0.0.0", "::"} and not self.trust_forwarded_for:
            warnings.append(
                f"listening on {self.host} in plain HTTP with no proxy: everyone on the "
                "network reaches the box and passwords cross it unencrypted; put a TLS proxy "
                "(Caddy, nginx) in front and set RODEOAI_TRUST_FORWARDED_FOR=true, or bind "
                "127.0.0.1"
            )
        if self.smtp_host:
            warnings.extend(self._mail_warnings())
        return warnings

    def _mail_warnings(self) -> list[str]:
        warnings = []
        local = self.smtp_host in {"localhost", "127.0.0.1", "::1"}
        if self.smtp_tls == "none" and not local:
            warnings.append(
                f"RODEOAI_SMTP_TLS=none with the remote server {self.smtp_host}: mail, reset "
                "links and the SMTP password cross the network unencrypted; use starttls or ssl"
            )
        if "://127.0.0.1" in self.public_url or "://localhost" in self.public_url:
            warnings.append(
                f"e-mail is on but RODEOAI_PUBLIC_URL is {self.public_url}: links in mails "
                "(password resets) point at the server's own loopback; set the address users reach"
            )
        return warnings
