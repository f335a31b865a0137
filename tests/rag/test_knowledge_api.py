"""/api/admin/documents: list, upload with progress events, remove; and what it refuses.
Also the web session rules the pages rely on: a cookie alone cannot change anything."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from server.config import Settings
from server.main import create_app
from tests.conftest import settings_for
from tests.helpers import PASSWORD, sign_up, sse_events
from tests.servers import copy_data

DOC = b"# Dry Creek Jackpot\n\nThe Dry Creek jackpot pays four holes and starts at noon sharp.\n"


@pytest.fixture(scope="module")
def settings(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return settings_for(copy_data(shared_data, tmp_path_factory.mktemp("kn") / "data"))


@pytest.fixture(scope="module")
def api(settings: Settings) -> Iterator[TestClient]:
    """One app for the file: each test uses its own accounts and files."""
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        client.app.state.components.accounts.create_admin("admin@example.com", PASSWORD)  # type: ignore[attr-defined]
        yield client


def test_upload_streams_progress_then_the_document_is_searchable_and_removable(
    api: TestClient,
) -> None:
    admin = sign_up(api, "admin@example.com")
    reply = api.post(
        "/api/admin/documents", headers=admin, files={"file": ("../../dry creek.md", DOC)}
    )
    assert reply.status_code == 200, reply.text
    seen = sse_events(reply.text)
    assert seen[0] == ("saved", {"source": "uploads/dry-creek.md"})  # the path was dropped
    assert any(name == "progress" for name, _ in seen)
    name, summary = seen[-1]
    assert name == "done" and summary["added_documents"] == 1 and not summary["errors"]

    listed = {d["source"]: d for d in api.get("/api/admin/documents", headers=admin).json()}
    assert listed["uploads/dry-creek.md"]["chunks"] >= 1
    hits = api.get("/api/search", params={"q": "Dry Creek jackpot holes"}).json()
    assert hits[0]["source"] == "uploads/dry-creek.md"
    passage = api.get(f"/api/passages/{hits[0]['chunk_id']}").json()
    assert "four holes" in passage["text"] and passage["title"] == "Dry Creek Jackpot"

    again = sse_events(
        api.post("/api/admin/documents", headers=admin, files={"file": ("dry-creek.md", DOC)}).text
    )
    assert again[-1][1]["unchanged_documents"] == 1  # the same file twice changes nothing

    removed = api.delete(
        "/api/admin/documents", params={"source": "uploads/dry-creek.md"}, headers=admin
    )
    assert removed.status_code == 200 and removed.json()["removed_chunks"] >= 1
    assert api.get(f"/api/passages/{hits[0]['chunk_id']}").json()["error"]["code"] == "not_found"


def test_uploads_refuse_strangers_bad_types_and_oversized_files(
    api: TestClient, settings: Settings
) -> None:
    user = sign_up(api, "rider@example.com")
    files = {"file": ("notes.md", DOC)}
    assert api.post("/api/admin/documents", files=files).status_code == 401
    assert api.post("/api/admin/documents", headers=user, files=files).status_code == 403
    admin = sign_up(api, "admin@example.com")
    exe = api.post("/api/admin/documents", headers=admin, files={"file": ("run.exe", b"MZ")})
    assert exe.status_code == 422 and exe.json()["error"]["code"] == "unsupported"
    big = b"x" * (settings.max_file_bytes + 1)
    huge = api.post("/api/admin/documents", headers=admin, files={"file": ("big.txt", big)})
    assert huge.status_code in {413, 422}, huge.text
    assert huge.json()["error"]["code"] in {"payload_too_large", "file_too_large"}
    missing = api.delete("/api/admin/documents", params={"source": "nope"}, headers=admin)
    assert missing.status_code == 404


def test_a_session_cookie_needs_the_csrf_header_to_change_anything(api: TestClient) -> None:
    """The web app's cookie signs reads in; a forged cross-site POST carries the cookie but
    cannot know the CSRF token, so it is refused."""
    api.post("/api/auth/register", json={"email": "cookie@example.com", "password": PASSWORD})
    login = api.post("/api/auth/login", json={"email": "cookie@example.com", "password": PASSWORD})
    api.cookies.set("rodeoai_session", login.json()["access_token"])
    api.cookies.set("rodeoai_csrf", "token-from-the-page")
    assert api.get("/api/users/me").json()["email"] == "cookie@example.com"
    forged = api.patch("/api/users/me", json={"display_name": "forged"})
    assert forged.status_code == 403 and forged.json()["error"]["code"] == "csrf_failed"
    wrong = api.patch(
        "/api/users/me", json={"display_name": "forged"}, headers={"X-CSRF-Token": "guess"}
    )
    assert wrong.status_code == 403
    fine = api.patch(
        "/api/users/me",
        json={"display_name": "Cookie"},
        headers={"X-CSRF-Token": "token-from-the-page"},
    )
    assert fine.status_code == 200 and fine.json()["display_name"] == "Cookie"
    form = api.post("/sign-out", data={"csrf_token": "guess"})
    assert form.status_code == 403


def test_an_admin_rebuilds_an_emptied_index_from_the_stored_embeddings(api: TestClient) -> None:
    components = api.app.state.components  # type: ignore[attr-defined]
    api.cookies.clear()  # earlier tests' session cookies
    assert api.post("/api/admin/index/rebuild").status_code == 401
    user = sign_up(api, "roper@example.com")
    assert api.post("/api/admin/index/rebuild", headers=user).status_code == 403
    chunks = sum(d["chunks"] for d in components.ingestor.documents())
    index = components.index
    with index._lock.write():  # a lost index in memory: every search would come back empty
        index._index = index._empty()
    assert index.count == 0

    admin = sign_up(api, "admin@example.com")
    reply = api.post("/api/admin/index/rebuild", headers=admin)
    assert reply.status_code == 200, reply.text
    assert reply.json()["vectors"] == chunks == index.count
    vector = components.embedder.encode(["heading rope length"])[0]
    assert len(index.search(vector, 5)) == 5  # dense search finds passages again
