"""Settings: environment variables, validation, and the documented example staying complete."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from server.config import Settings

pytestmark = pytest.mark.one_pass  # the PostgreSQL pass leaves these to SQLite

ROOT = Path(__file__).resolve().parent.parent


def test_every_setting_is_documented_in_env_example() -> None:
    documented = {
        line.split("=", 1)[0]
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line.startswith("RODEOAI_")
    }
    expected = {f"RODEOAI_{name.upper()}" for name in Settings.model_fields}
    assert documented == expected


def test_env_example_values_parse_to_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.startswith("RODEOAI_"):
            key, value = line.split("=", 1)
            monkeypatch.setenv(key, value)
    from_example = Settings(_env_file=None)  # type: ignore[call-arg]
    defaults = Settings.model_construct()
    for name in Settings.model_fields:
        got, want = getattr(from_example, name), getattr(defaults, name)
        assert got == want or (want is None and got in ("", None)), name


def test_environment_variables_override_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RODEOAI_DATA_DIR", "/srv/rodeo")
    monkeypatch.setenv("RODEOAI_TOP_K", "7")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.database_path == Path("/srv/rodeo/rodeoai.db")
    assert settings.index_dir == Path("/srv/rodeo/index")
    assert settings.top_k == 7


@pytest.mark.parametrize(
    ("field", "value"),
    [("backends", "gpt5,extractive"), ("chunk_overlap", 500), ("top_k", 0), ("port", 70000)],
)
def test_invalid_settings_are_rejected(field: str, value: object) -> None:
    with pytest.raises(ValidationError):
        Settings(_env_file=None, **{field: value})  # type: ignore[call-arg]


def test_backend_order_follows_a_copied_setting() -> None:
    """A cached order went stale: model_copy(update={"backends": ...}) kept the old one."""
    first = Settings(_env_file=None, backends="extractive")  # type: ignore[call-arg]
    assert first.backend_order == ["extractive"]
    assert first.model_copy(update={"backends": "llamacpp"}).backend_order == ["llamacpp"]


def test_risky_settings_are_named_at_start_up(tmp_path: Path) -> None:
    def unsafe(workers: int = 1, **values: Any) -> str:
        settings = Settings(_env_file=None, data_dir=tmp_path, **values)  # type: ignore[call-arg]
        return " | ".join(settings.unsafe(workers=workers))

    assert unsafe() == ""  # the defaults: loopback, one worker, no CORS, billing off
    assert "RODEOAI_SECRET_KEY" in unsafe(workers=2)
    assert "multiplied by the workers" in unsafe(workers=2, secret_key="s" * 40)
    shared = {"secret_key": "s" * 40, "rate_limit_storage": "redis://cache:6379/0"}
    assert unsafe(workers=2, **shared) == ""
    assert "open mode with Stripe on" in unsafe(stripe_api_key="sk_test_x")
    assert unsafe(stripe_api_key="sk_test_x", access_mode="accounts") == ""
    assert "every origin" in unsafe(cors_origins=["*"])
    assert "TLS proxy" in unsafe(host="0.0.0.0")
    assert unsafe(host="0.0.0.0", trust_forwarded_for=True) == ""  # behind a proxy
