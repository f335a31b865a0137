"""Shared fixtures. Everything runs on the real bundled models, real SQLite and real FAISS;
each test gets its own data folder, except read-only tests that share one ingested copy of
the starter knowledge (ingesting it takes seconds, so it happens once per session)."""

from __future__ import annotations

import gc
import inspect
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from server.billing import plans
from server.components import Components
from server.config import Settings
from server.main import create_app
from tests import databases

ROOT = Path(__file__).resolve().parent.parent
KNOWLEDGE = ROOT / "knowledge"

MakeSettings = Callable[..., Settings]
# scripts/test_passes.sh runs the two passes at once and sets this: then these engine-
# agnostic (one_pass) tests run in the PostgreSQL pass instead of the SQLite pass, so that
# both take about as long. Each was checked there.
BALANCED = os.environ.get("RODEOAI_TEST_BALANCE") == "1"
_TO_POSTGRES = [
    ROOT / "tests" / "web",
    ROOT / "tests" / "mcp",
    ROOT / "tests" / "api" / "test_compat_apis.py",
]
TEST_MAX_TOKENS = 96

# What starts a process: helpers a test calls, or fixtures it asks for. Marking from these
# keeps the e2e marker true as tests change, without a list to maintain by hand.
_PROCESS_CALLS = ("rodeoai_server(", "run_cli(", "llama_cpp_server(", "subprocess.", "make_admin(")
_PROCESS_FIXTURES = {"localstripe", "llama_server", "single_slot_server", "server", "provider"}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--database",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="run every test on SQLite files (default) or on a real PostgreSQL (pgserver)",
    )


def pytest_configure(config: pytest.Config) -> None:
    databases.ENGINE = config.getoption("--database")


def pytest_report_header(config: pytest.Config) -> str:
    return f"database: {databases.ENGINE}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        function = getattr(item, "function", None)
        source = inspect.getsource(function) if function else ""
        fixtures = set(getattr(item, "fixturenames", ()))
        if any(call in source for call in _PROCESS_CALLS) or fixtures & _PROCESS_FIXTURES:
            item.add_marker(pytest.mark.e2e)
        if databases.on_postgres() and item.get_closest_marker("sqlite_only"):
            item.add_marker(pytest.mark.skip(reason="SQLite files; the SQLite pass runs it"))
        one_pass = item.get_closest_marker("one_pass") is not None
        moved = one_pass and BALANCED and any(item.path.is_relative_to(p) for p in _TO_POSTGRES)
        if databases.on_postgres() and one_pass and not moved:
            item.add_marker(
                pytest.mark.skip(
                    reason="covered on both engines elsewhere; the SQLite pass runs it"
                )
            )
        if not databases.on_postgres() and moved:
            item.add_marker(pytest.mark.skip(reason="balanced: the PostgreSQL pass runs it"))


_TODAY = plans.today()


@pytest.fixture(autouse=True)
def _one_billing_day(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process apps count quotas against the day the session started: a test that runs
    across midnight UTC would otherwise find a fresh daily quota half-way through."""
    monkeypatch.setattr(plans, "today", lambda: _TODAY)


@pytest.fixture(autouse=True)
def _release_connections() -> Iterator[None]:
    """Engines a test dropped give their PostgreSQL connections back before the server runs
    short. A full collection with torch loaded takes 1-3 s, so it runs only when needed, not
    after every test (that alone was 200 s of the PostgreSQL pass)."""
    yield
    if databases.on_postgres() and databases.connections() > databases.COLLECT_AT:
        gc.collect()


def settings_for(data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "knowledge_dir": KNOWLEDGE,
        "autoload_knowledge": False,
        "log_level": "WARNING",
        "database_url": databases.database_url(data_dir),
        # Short drafts: the tests check what happens around an answer, and a 135M model's
        # 256-token drafts spent minutes of the suite on words no test reads.
        "llm_max_tokens": TEST_MAX_TOKENS,
        # Seconds of encoding per app started: one test turns it on and checks it.
        "fact_cache_warmup": False,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def make_settings(tmp_path: Path) -> MakeSettings:
    def make(**overrides: Any) -> Settings:
        return settings_for(tmp_path / "data", **overrides)

    return make


@pytest.fixture(scope="session")
def shared_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder with the starter knowledge ingested; tests must not modify it."""
    data = tmp_path_factory.mktemp("shared-data")
    components = Components(settings_for(data))
    summary = components.ingestor.ingest([KNOWLEDGE])
    assert summary.added_documents >= 30 and not summary.errors
    components.engine.dispose()
    databases.freeze(data)
    return data


@pytest.fixture
def kb_settings(shared_data: Path, tmp_path: Path) -> Settings:
    """Settings on a private copy of the ingested knowledge, for tests that write."""
    from tests.servers import copy_data

    return settings_for(copy_data(shared_data, tmp_path / "kb"))


@pytest.fixture(scope="session")
def shared_components(shared_data: Path) -> Components:
    return Components(settings_for(shared_data))


@pytest.fixture(scope="module")
def client(shared_data: Path) -> Iterator[TestClient]:
    """One app per test file on the shared knowledge: no file spends another's guest
    rate-limit budget, and none sees another's in-memory state."""
    with TestClient(create_app(settings_for(shared_data)), raise_server_exceptions=False) as c:
        yield c


def run_cli(
    *args: str,
    data_dir: Path,
    timeout: float = 180,
    extra_env: dict[str, str] | None = None,
    input_text: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the real `rodeoai` console script in a clean process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RODEOAI_")}
    env.update(
        {
            "RODEOAI_DATA_DIR": str(data_dir),
            "RODEOAI_KNOWLEDGE_DIR": str(KNOWLEDGE),
            "RODEOAI_LOG_LEVEL": "WARNING",
            **databases.database_env(data_dir),
            **(extra_env or {}),
        }
    )
    exe = shutil.which("rodeoai", path=str(Path(sys.executable).parent)) or "rodeoai"
    return subprocess.run(
        [exe, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=ROOT,
        input=input_text,
    )


@pytest.fixture(scope="session")
def localstripe() -> Iterator[str]:
    """A real Stripe-compatible server (PyPI localstripe) on a free port. --from-scratch:
    it would otherwise load whatever store another run left in /tmp/localstripe.pickle."""
    from tests.servers import BIN, free_port, running

    port = free_port()
    command = [str(BIN / "localstripe"), "--port", str(port), "--from-scratch"]
    with running(command, f"http://127.0.0.1:{port}/v1/customers"):
        yield f"http://127.0.0.1:{port}"
