"""OpenID Connect sign-in end to end against a real provider process (oidc-provider-mock)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from server.components import Components
from server.db import OAuthIdentity, OAuthState, read_session, write_session
from tests.accounts.test_auth import PASSWORD, bearer, register
from tests.conftest import MakeSettings
from tests.servers import free_port


@pytest.fixture(scope="module")
def provider() -> Iterator[str]:
    port = free_port()
    exe = Path(sys.executable).parent / "oidc-provider-mock"
    process = subprocess.Popen(
        [str(exe), "--port", str(port), "--require-nonce", "true"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if httpx.get(f"{base}/.well-known/openid-configuration").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            pytest.fail("oidc-provider-mock did not start")
        yield base
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def app(make_settings: MakeSettings, provider: str) -> Iterator[TestClient]:
    from server.main import create_app

    settings = make_settings(
        public_url="http://testserver",
        oauth_oidc_name="mock",
        oauth_oidc_discovery_url=f"{provider}/.well-known/openid-configuration",
        oauth_oidc_client_id="rodeoai-test",
        oauth_oidc_client_secret="not-so-secret",
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def start_login(app: TestClient) -> str:
    response = app.get("/api/auth/oauth/mock/login", follow_redirects=False)
    assert response.status_code == 302, response.text
    return response.headers["location"]


def approve(authorize_url: str, subject: str) -> str:
    """Act as the user on the provider's consent page; returns our callback URL."""
    response = httpx.post(authorize_url, data={"sub": subject}, follow_redirects=False)
    assert response.status_code == 302, response.text
    target = urlsplit(response.headers["location"])
    assert target.path == "/api/auth/oauth/mock/callback"
    return f"{target.path}?{target.query}"


def components_of(app: TestClient) -> Components:
    return app.app.state.components  # type: ignore[attr-defined, no-any-return]


def test_login_redirect_uses_pkce_s256_state_and_nonce(app: TestClient) -> None:
    query = parse_qs(urlsplit(start_login(app)).query)
    assert query["code_challenge_method"] == ["S256"]
    assert len(query["code_challenge"][0]) >= 43
    assert len(query["state"][0]) >= 32 and len(query["nonce"][0]) >= 32
    assert query["redirect_uri"] == ["http://testserver/api/auth/oauth/mock/callback"]
    assert app.get("/api/auth/oauth/providers").json() == ["mock"]


def test_oidc_login_end_to_end_issues_our_tokens(app: TestClient, provider: str) -> None:
    callback = approve(start_login(app), "alice@example.com")
    tokens = app.get(callback)
    assert tokens.status_code == 200, tokens.text
    profile = app.get("/api/users/me", headers=bearer(tokens.json()["access_token"])).json()
    assert profile["email"] == "alice@example.com"

    with read_session(components_of(app).engine) as session:
        identity = session.exec(select(OAuthIdentity)).one()
    assert (identity.issuer, identity.subject) == (provider, "alice@example.com")

    again = app.get(approve(start_login(app), "alice@example.com")).json()
    second = app.get("/api/users/me", headers=bearer(again["access_token"])).json()
    assert second["id"] == profile["id"]  # same (issuer, subject), same account


def test_unknown_state_is_rejected(app: TestClient) -> None:
    callback = approve(start_login(app), "bob@example.com")
    forged = callback.replace("state=", "state=forged")
    response = app.get(forged)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_state"


def test_reused_state_is_rejected(app: TestClient) -> None:
    callback = approve(start_login(app), "carol@example.com")
    assert app.get(callback).status_code == 200
    replay = app.get(callback)
    assert replay.status_code == 400
    assert "already used" in replay.json()["error"]["message"]


def test_id_token_with_the_wrong_nonce_is_rejected(app: TestClient) -> None:
    callback = approve(start_login(app), "dave@example.com")
    with write_session(components_of(app).engine) as session:  # the nonce we expect changes
        for pending in session.exec(select(OAuthState)).all():
            pending.nonce = "a-different-nonce"
            session.add(pending)
    response = app.get(callback)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_id_token"
    assert "nonce" in response.json()["error"]["message"]


def test_oauth_never_takes_over_a_password_account_by_email(app: TestClient) -> None:
    register(app, "erin@example.com")
    response = app.get(approve(start_login(app), "erin@example.com"))
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "email_in_use"
    with read_session(components_of(app).engine) as session:
        assert session.exec(select(OAuthIdentity)).all() == []
    login = app.post("/api/auth/login", json={"email": "erin@example.com", "password": PASSWORD})
    assert login.status_code == 200


def test_provider_errors_and_unknown_providers_are_clear(app: TestClient) -> None:
    denied = app.get("/api/auth/oauth/mock/callback", params={"error": "access_denied"})
    assert denied.status_code == 400 and denied.json()["error"]["code"] == "oauth_denied"
    assert app.get("/api/auth/oauth/nope/login", follow_redirects=False).status_code == 404


def test_a_browser_coming_back_from_the_provider_is_signed_in_to_the_web_app(
    app: TestClient,
) -> None:
    """The web app's sign-in page links to the provider; back at the callback a browser
    (it asks for HTML) gets the session cookies and lands on the chat, not on JSON."""
    callback = approve(start_login(app), "erin@example.com")
    back = app.get(callback, headers={"Accept": "text/html"}, follow_redirects=False)
    assert back.status_code == 303 and back.headers["location"] == "/"
    set_cookies = back.headers.get_list("set-cookie")
    session = next(c for c in set_cookies if c.startswith("rodeoai_session="))
    assert "httponly" in session.lower() and "samesite=lax" in session.lower()
    assert any(c.startswith("rodeoai_refresh=") for c in set_cookies)
    assert "access_token" not in back.text
    assert app.get("/api/users/me").json()["email"] == "erin@example.com"  # by the cookie
