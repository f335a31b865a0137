"""Accounts against the real app: sessions, token attacks, brute force, roles, ownership."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import argon2
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import OctKey, RSAKey
from sqlmodel import select

from server.components import Components
from server.config import Settings
from server.db import AnswerMetric, Experiment, User, read_session, write_session
from server.main import create_app
from tests import databases
from tests.conftest import ROOT, MakeSettings

PASSWORD = "correct horse battery"


@pytest.fixture
def settings(make_settings: MakeSettings) -> Settings:
    return make_settings()


@pytest.fixture
def api(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def register(api: TestClient, email: str, password: str = PASSWORD) -> None:
    response = api.post("/api/auth/register", json={"email": email, "password": password})
    assert response.status_code == 202, response.text


def login(api: TestClient, email: str, password: str = PASSWORD) -> dict[str, Any]:
    response = api.post("/api/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    return dict(response.json())


def signed_up(api: TestClient, email: str) -> dict[str, Any]:
    register(api, email)
    return login(api, email)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def me(api: TestClient, token: str) -> int:
    return api.get("/api/users/me", headers=bearer(token)).status_code


def test_register_login_refresh_logout_cycle(api: TestClient) -> None:
    tokens = signed_up(api, "Cycle@Example.com")
    assert tokens["token_type"] == "bearer" and tokens["expires_in"] == 15 * 60
    profile = api.get("/api/users/me", headers=bearer(tokens["access_token"])).json()
    assert profile["email"] == "cycle@example.com" and profile["role"] == "user"

    fresh = api.post("/api/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert fresh.status_code == 200
    rotated = fresh.json()
    assert rotated["refresh_token"] != tokens["refresh_token"]
    assert me(api, rotated["access_token"]) == 200

    assert api.post("/api/auth/logout", headers=bearer(rotated["access_token"])).status_code == 204
    assert me(api, rotated["access_token"]) == 401
    assert me(api, tokens["access_token"]) == 401  # same session, so also ended
    again = api.post("/api/auth/refresh", json={"refresh_token": rotated["refresh_token"]})
    assert again.status_code == 401


def test_reusing_a_refresh_token_revokes_the_whole_family(api: TestClient) -> None:
    first = signed_up(api, "reuse@example.com")
    second = api.post("/api/auth/refresh", json={"refresh_token": first["refresh_token"]}).json()
    replay = api.post("/api/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert replay.status_code == 401
    assert replay.json()["error"]["code"] == "invalid_refresh_token"
    newest = api.post("/api/auth/refresh", json={"refresh_token": second["refresh_token"]})
    assert newest.status_code == 401
    assert me(api, second["access_token"]) == 401
    other_session = login(api, "reuse@example.com")  # a separate sign-in is unaffected
    assert me(api, other_session["access_token"]) == 200


def _forge(settings: Settings, case: str, good: str, refresh: str) -> str:
    real = OctKey.import_key((settings.data_dir / "secret.key").read_text().strip().encode())
    claims = jwt.decode(good, real).claims
    now = int(time.time())
    if case == "alg_none":
        import base64
        import json

        def part(obj: dict[str, Any]) -> str:
            return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

        return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."
    if case == "rs256_confusion":
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        key = RSAKey.import_key(private)
        return jwt.encode({"alg": "RS256"}, claims, key, algorithms=["RS256"])
    if case == "bad_signature":
        return jwt.encode(
            {"alg": "HS256"}, claims, OctKey.import_key(b"x" * 48), algorithms=["HS256"]
        )
    if case == "tampered":
        head, _, sig = good.split(".")
        forged = jwt.encode(
            {"alg": "HS256"},
            {**claims, "sub": "999"},
            OctKey.import_key(b"y" * 48),
            algorithms=["HS256"],
        ).split(".")[1]
        return f"{head}.{forged}.{sig}"
    changes = {
        "expired": {"exp": now - 10, "iat": now - 1000, "nbf": now - 1000},
        "wrong_audience": {"aud": "someone-else"},
        "wrong_issuer": {"iss": "https://evil.example"},
        "wrong_type": {"typ": "refresh"},
        "no_session": {"sid": None},
    }
    if case in changes:
        body = {k: v for k, v in {**claims, **changes[case]}.items() if v is not None}
        return jwt.encode({"alg": "HS256"}, body, real, algorithms=["HS256"])
    if case == "refresh_as_access":
        return refresh
    return "not.a.jwt"


@pytest.mark.parametrize(
    "case",
    [
        "alg_none",
        "rs256_confusion",
        "bad_signature",
        "tampered",
        "expired",
        "wrong_audience",
        "wrong_issuer",
        "wrong_type",
        "no_session",
        "refresh_as_access",
        "garbage",
        "revoked",
    ],
)
def test_bad_access_tokens_get_401(api: TestClient, settings: Settings, case: str) -> None:
    tokens = signed_up(api, f"{case}@example.com")
    assert me(api, tokens["access_token"]) == 200
    if case == "revoked":
        api.post("/api/auth/logout", headers=bearer(tokens["access_token"]))
        token = tokens["access_token"]
    else:
        token = _forge(settings, case, tokens["access_token"], tokens["refresh_token"])
    response = api.get("/api/users/me", headers=bearer(token))
    assert response.status_code == 401
    assert response.json()["error"]["code"] in {"invalid_token", "unauthorized"}
    assert response.headers["www-authenticate"] == "Bearer"


def test_stored_password_hashes_are_argon2id(api: TestClient, settings: Settings) -> None:
    register(api, "hash@example.com")
    with read_session(Components(settings).engine) as session:
        stored = session.exec(select(User.password_hash)).first()
    assert stored is not None and stored.startswith("$argon2id$")
    params = dict(p.split("=") for p in stored.split("$")[3].split(","))
    assert int(params["m"]) >= 19456 and int(params["t"]) >= 2 and int(params["p"]) == 1
    assert PASSWORD not in stored


def test_answers_do_not_reveal_which_emails_exist(
    api: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    register(api, "known@example.com")
    new = api.post("/api/auth/register", json={"email": "new@example.com", "password": PASSWORD})
    dup = api.post("/api/auth/register", json={"email": "known@example.com", "password": PASSWORD})
    assert (new.status_code, new.json()) == (dup.status_code, dup.json())

    # A spy, not a mock: every real argon2 verification still runs, and we note its cost.
    verified: list[argon2.Parameters] = []
    real_verify = argon2.PasswordHasher.verify

    def spy(self: argon2.PasswordHasher, stored: str, password: str) -> bool:
        verified.append(argon2.extract_parameters(stored))
        return real_verify(self, stored, password)

    monkeypatch.setattr(argon2.PasswordHasher, "verify", spy)

    def attempt(email: str) -> tuple[int, str, list[argon2.Parameters]]:
        verified.clear()
        r = api.post("/api/auth/login", json={"email": email, "password": "wrong password!"})
        return r.status_code, r.json()["error"]["message"], list(verified)

    known, unknown = attempt("known@example.com"), attempt("nobody@example.com")
    assert known[:2] == unknown[:2] == (401, "wrong e-mail or password")
    # The unknown address pays for one full argon2id verification at the same cost (a dummy
    # hash), so the time taken does not tell whether the account exists.
    assert len(known[2]) == len(unknown[2]) == 1 and known[2] == unknown[2]
    assert known[2][0].type is argon2.Type.ID

    resets = [
        api.post("/api/auth/password-reset", json={"email": e})
        for e in ("known@example.com", "nobody@example.com")
    ]
    assert resets[0].status_code == resets[1].status_code == 202
    assert resets[0].json() == resets[1].json()


def test_brute_force_is_capped_per_account_and_the_owner_gets_back_in(
    make_settings: MakeSettings,
) -> None:
    settings = make_settings(
        login_account_limit="100/15 seconds", login_ip_limit="1000/minute", trust_forwarded_for=True
    )
    with TestClient(create_app(settings)) as api:
        register(api, "victim@example.com")
        statuses = []
        for i in range(200):
            r = api.post(
                "/api/auth/login",
                json={"email": "victim@example.com", "password": f"guess-{i}"},
                headers={"X-Forwarded-For": f"10.0.{i // 250}.{i % 250}"},
            )
            statuses.append(r.status_code)
            if r.status_code == 429:
                assert int(r.headers["retry-after"]) >= 1
                assert r.json()["error"]["code"] == "rate_limited"
        assert statuses.count(401) <= 100 and statuses.count(429) >= 100
        assert set(statuses) == {401, 429}
        locked = api.post(
            "/api/auth/login", json={"email": "victim@example.com", "password": PASSWORD}
        )
        assert locked.status_code == 429
        time.sleep(int(locked.headers["retry-after"]) + 1)
        assert login(api, "victim@example.com")["access_token"]


def test_guest_and_user_chat_limits_answer_429_with_retry_after(
    make_settings: MakeSettings,
) -> None:
    with TestClient(create_app(make_settings(chat_guest_limit="2/minute"))) as api:
        ask = {"messages": [{"role": "user", "content": "hi there"}]}
        codes = [api.post("/api/chat", json=ask).status_code for _ in range(3)]
        assert codes[:2] == [503, 503]  # allowed through (no knowledge loaded in this app)
        limited = api.post("/api/chat", json=ask)
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        token = signed_up(api, "chatter@example.com")["access_token"]
        assert api.post("/api/chat", json=ask, headers=bearer(token)).status_code == 503


def test_accounts_mode_requires_sign_in_to_chat(make_settings: MakeSettings) -> None:
    with TestClient(create_app(make_settings(access_mode="accounts"))) as api:
        ask = {"messages": [{"role": "user", "content": "hi there"}]}
        assert api.post("/api/chat", json=ask).status_code == 401
        token = signed_up(api, "member@example.com")["access_token"]
        assert api.post("/api/chat", json=ask, headers=bearer(token)).status_code == 503
        assert api.get("/api/search", params={"q": "rope"}).status_code == 401


def test_privileged_fields_cannot_be_set_through_the_api(api: TestClient) -> None:
    token = signed_up(api, "climber@example.com")["access_token"]
    for field, value in (
        ("role", "admin"),
        ("plan", "pro"),
        ("credits", 10_000),
        ("disabled", False),
        ("email", "x@example.com"),
        ("id", 1),
    ):
        r = api.patch("/api/users/me", json={field: value}, headers=bearer(token))
        assert r.status_code == 422, (field, r.text)
    r = api.post(
        "/api/auth/register", json={"email": "a@example.com", "password": PASSWORD, "role": "admin"}
    )
    assert r.status_code == 422
    profile = api.get("/api/users/me", headers=bearer(token)).json()
    assert (profile["role"], profile["plan"], profile["credits"]) == ("user", "free", 0)

    ok = api.patch(
        "/api/users/me",
        headers=bearer(token),
        json={"skill_level": "beginner", "events": ["header"], "classification": 3.5},
    )
    assert ok.status_code == 200
    assert (ok.json()["skill_level"], ok.json()["events"]) == ("beginner", ["header"])


def test_api_keys_are_shown_once_work_as_bearer_and_can_be_revoked(api: TestClient) -> None:
    token = signed_up(api, "keys@example.com")["access_token"]
    created = api.post(
        "/api/users/me/api-keys", json={"name": "scoreboard"}, headers=bearer(token)
    ).json()
    assert created["key"].startswith("rk_")
    listed = api.get("/api/users/me/api-keys", headers=bearer(token)).json()
    assert listed[0]["prefix"] == created["key"][:10] and "key" not in listed[0]
    assert me(api, created["key"]) == 200
    gone = api.delete(f"/api/users/me/api-keys/{created['id']}", headers=bearer(token))
    assert gone.status_code == 204
    assert me(api, created["key"]) == 401


def test_password_change_signs_out_every_session(api: TestClient) -> None:
    first = signed_up(api, "mover@example.com")
    second = login(api, "mover@example.com")
    changed = api.post(
        "/api/auth/password",
        headers=bearer(first["access_token"]),
        json={"current_password": PASSWORD, "new_password": "a much newer pass"},
    )
    assert changed.status_code == 204
    for session in (first, second):
        assert me(api, session["access_token"]) == 401
        assert (
            api.post(
                "/api/auth/refresh", json={"refresh_token": session["refresh_token"]}
            ).status_code
            == 401
        )
    login(api, "mover@example.com", "a much newer pass")


def test_password_reset_token_works_once(api: TestClient, settings: Settings) -> None:
    register(api, "forgot@example.com")
    token = Components(settings).accounts.request_password_reset(
        email="forgot@example.com", ip="test"
    )
    assert token
    body = {"token": token, "new_password": "brand new password"}
    assert api.post("/api/auth/password-reset/confirm", json=body).status_code == 204
    login(api, "forgot@example.com", "brand new password")
    reused = api.post("/api/auth/password-reset/confirm", json=body)
    assert reused.status_code == 422 and reused.json()["error"]["code"] == "invalid_reset"


def make_admin(settings: Settings, email: str) -> None:
    env = {
        "RODEOAI_DATA_DIR": str(settings.data_dir),
        "PATH": str(Path(sys.executable).parent),
        **databases.database_env(settings.data_dir),
    }
    done = subprocess.run(
        [sys.executable, "-m", "server.cli", "users", "create-admin", email, "--password-stdin"],
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert f"{email} is an administrator" in done.stdout


def test_admin_routes_check_the_role_and_disabling_revokes(
    api: TestClient, settings: Settings
) -> None:
    user = signed_up(api, "rider@example.com")
    assert api.get("/api/admin/users", headers=bearer(user["access_token"])).status_code == 403
    make_admin(settings, "boss@example.com")
    admin = login(api, "boss@example.com")
    users = api.get("/api/admin/users", headers=bearer(admin["access_token"])).json()
    rider = next(u for u in users if u["email"] == "rider@example.com")

    promoted = api.patch(
        f"/api/admin/users/{rider['id']}",
        json={"role": "expert"},
        headers=bearer(admin["access_token"]),
    )
    assert promoted.json()["role"] == "expert"
    disabled = api.patch(
        f"/api/admin/users/{rider['id']}",
        json={"disabled": True},
        headers=bearer(admin["access_token"]),
    )
    assert disabled.status_code == 200
    assert me(api, user["access_token"]) == 401
    assert (
        api.post("/api/auth/refresh", json={"refresh_token": user["refresh_token"]}).status_code
        == 401
    )
    bad = api.post("/api/auth/login", json={"email": "rider@example.com", "password": PASSWORD})
    assert bad.status_code == 401


# Every route with an object id, and how another user tries to reach someone else's object.
OWNERSHIP_MATRIX: dict[tuple[str, str], tuple[str, dict[str, Any] | None]] = {
    ("DELETE", "/api/users/me/api-keys/{key_id}"): ("api_key", None),
    ("PATCH", "/api/admin/users/{user_id}"): ("user", {"role": "admin"}),
    ("GET", "/api/conversations/{conversation_id}"): ("conversation", None),
    ("PATCH", "/api/conversations/{conversation_id}"): ("conversation", {"title": "mine now"}),
    ("DELETE", "/api/conversations/{conversation_id}"): ("conversation", None),
    ("POST", "/api/answers/{answer_id}/feedback"): ("answer", {"rating": "down"}),
    ("POST", "/api/review/{answer_id}"): ("answer", {"rating": 1}),
    # administrators' records: a non-admin is refused (403) before any lookup
    ("GET", "/api/admin/experiments/{experiment_id}"): ("experiment", None),
    ("GET", "/api/admin/experiments/{experiment_id}/results"): ("experiment", None),
    ("POST", "/api/admin/experiments/{experiment_id}/stop"): ("experiment", None),
    ("POST", "/api/admin/experiments/{experiment_id}/promote"): ("experiment", {"variant": "b"}),
}
# Guests may rate (with an answer's token), so without one an answer is simply not found.
ANONYMOUS = {("POST", "/api/answers/{answer_id}/feedback"): 404}
# /api/auth/oauth/{provider}/... names a provider, not a record; a passage is shared knowledge
# that every reader may open (the reader rule is tested in tests/web and tests/rag).
NOT_OBJECT_IDS = {"provider", "chunk_id"}


def test_ownership_matrix_covers_every_route_with_an_object_id(
    api: TestClient, settings: Settings
) -> None:
    def params(path: str) -> set[str]:
        return {p.strip("{}") for p in path.split("/") if p.startswith("{")}

    routes = {
        (method.upper(), path)
        for path, operations in api.get("/openapi.json").json()["paths"].items()
        for method in operations
        if params(path) - NOT_OBJECT_IDS
    }
    assert routes == set(OWNERSHIP_MATRIX), "add new object routes to OWNERSHIP_MATRIX"

    owner = signed_up(api, "owner@example.com")
    intruder = signed_up(api, "intruder@example.com")
    key = api.post(
        "/api/users/me/api-keys", json={"name": "mine"}, headers=bearer(owner["access_token"])
    ).json()
    owner_id = api.get("/api/users/me", headers=bearer(owner["access_token"])).json()["id"]
    store = api.app.state.components.conversations  # type: ignore[attr-defined]
    conversation = store.create(owner_id, "owner's chat")
    with write_session(store.engine) as session:
        record = AnswerMetric(
            question="mine",
            response="mine",
            chunks_used=0,
            model="m",
            backend="b",
            skill_level="beginner",
            latency_ms=1,
            user_id=owner_id,
        )
        session.add(record)
        experiment = Experiment(name="theirs", variants_json='[{"name": "a"}, {"name": "b"}]')
        session.add(experiment)
        session.flush()
        answer, experiment_id = record.id, experiment.id
    ids = {"api_key": key["id"], "user": owner_id, "conversation": conversation.id}
    ids["answer"], ids["experiment"] = answer, experiment_id
    for (method, path), (kind, body) in OWNERSHIP_MATRIX.items():
        url = re.sub(r"\{[a-z_]+\}", str(ids[kind]), path)
        kwargs: dict[str, Any] = {"json": body} if body else {}
        as_intruder = api.request(method, url, headers=bearer(intruder["access_token"]), **kwargs)
        assert as_intruder.status_code in {403, 404}, (method, path, as_intruder.text)
        anonymous = api.request(method, url, **kwargs)
        assert anonymous.status_code == ANONYMOUS.get((method, path), 401), anonymous.text
    # the owner's objects survived every attempt
    assert me(api, key["key"]) == 200
    with read_session(store.engine) as session:  # nobody stopped or promoted it
        untouched = session.get(Experiment, experiment_id)
        assert untouched is not None and (untouched.status, untouched.winner) == ("running", None)
    reviews = api.app.state.components.review.queue(limit=200)  # type: ignore[attr-defined]
    assert answer in {i["answer_id"] for i in reviews}  # nobody reviewed or rated it
    assert next(i for i in reviews if i["answer_id"] == answer)["feedback"] is None
    mine = api.get(f"/api/conversations/{conversation.id}", headers=bearer(owner["access_token"]))
    assert mine.status_code == 200 and mine.json()["title"] == "owner's chat"
    missing = api.delete("/api/users/me/api-keys/999999", headers=bearer(owner["access_token"]))
    assert missing.status_code == 404


def test_signing_secret_is_generated_private_and_stable(settings: Settings) -> None:
    with TestClient(create_app(settings)) as api:
        tokens = signed_up(api, "stable@example.com")
    secret = settings.data_dir / "secret.key"
    assert secret.stat().st_mode & 0o777 == 0o600
    assert len(secret.read_text().strip()) >= 48
    with TestClient(create_app(settings)) as restarted:
        assert me(restarted, tokens["access_token"]) == 200


def test_cors_allows_only_configured_origins(make_settings: MakeSettings) -> None:
    with TestClient(create_app(make_settings(cors_origins=["https://club.example"]))) as api:

        def preflight(origin: str) -> Any:
            return api.options(
                "/api/chat", headers={"Origin": origin, "Access-Control-Request-Method": "POST"}
            )

        assert preflight("https://club.example").headers["access-control-allow-origin"] == (
            "https://club.example"
        )
        assert "access-control-allow-origin" not in preflight("https://evil.example").headers


def test_cli_lists_users_and_sets_roles(api: TestClient, settings: Settings) -> None:
    from tests.conftest import run_cli

    register(api, "cli-user@example.com")
    changed = run_cli(
        "users", "set-role", "cli-user@example.com", "expert", data_dir=settings.data_dir
    )
    assert changed.returncode == 0 and "is now expert" in changed.stdout
    listed = run_cli("users", "list", "--json", data_dir=settings.data_dir)
    rows = {r["email"]: r for r in json.loads(listed.stdout)}
    assert rows["cli-user@example.com"]["role"] == "expert"
    bad = run_cli("users", "set-role", "cli-user@example.com", "wizard", data_dir=settings.data_dir)
    assert bad.returncode == 2 and "role must be one of" in bad.stderr
    missing = run_cli("users", "set-role", "ghost@example.com", "user", data_dir=settings.data_dir)
    assert missing.returncode == 2 and "no account" in missing.stderr
