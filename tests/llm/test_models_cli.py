"""`rodeoai models list|pull|use|remove`.

The hub cannot be reached from the test machines, so downloads run against a local HTTP
server that serves one file in the Hugging Face layout, with HF_ENDPOINT pointing at it:
HEAD /{repo}/resolve/{revision}/{file} answers 302 to a CDN path with X-Repo-Commit,
X-Linked-Etag and X-Linked-Size (as huggingface.co does for an LFS file), GET follows it to
/cdn/{sha256}, which honours Range, and POST /api/models/{repo}/paths-info/{revision} gives
the LFS sha256. The catalogue is swapped for one test entry pointing there.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import huggingface_hub.constants
import pytest
from typer.testing import CliRunner

from server.cli import app
from server.config import Settings
from server.llm import catalog
from server.llm.catalog import CatalogEntry
from server.llm.llamacpp import resolve_model_path
from tests.conftest import run_cli
from tests.servers import free_port

REPO = "rodeo-test/Tiny-Instruct-GGUF"
FILENAME = "tiny-instruct-q4_k_m.gguf"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
PAYLOAD = b"GGUF" + os.urandom(300_000)
SHA = hashlib.sha256(PAYLOAD).hexdigest()
ENTRY = CatalogEntry("tiny-test", REPO, FILENAME, 0.01, "apache-2.0")


@dataclass
class FakeHub:
    """What the server serves, and what it was asked."""

    payload: bytes = PAYLOAD
    reported_sha: str = SHA  # the sha256 the API and ETag claim
    cut_after: int | None = None  # first GET: send this many bytes, then drop the connection
    log: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # quiet
            pass

        def _record(self, **extra: Any) -> None:
            hub.log.append({"method": self.command, "path": self.path, **extra})

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self._record()
            if self.path != f"/api/models/{REPO}/paths-info/{COMMIT}":
                return self._send(404, b"{}")
            lfs = {"oid": hub.reported_sha, "size": len(hub.payload), "pointerSize": 134}
            body = [{"type": "file", "path": FILENAME, "size": len(hub.payload), "lfs": lfs}]
            self._send(200, json.dumps(body).encode(), "application/json")

        def do_HEAD(self) -> None:
            self._resolve(head=True)

        def do_GET(self) -> None:
            if self.path.startswith("/cdn/"):
                return self._cdn()
            self._resolve(head=False)

        def _resolve(self, *, head: bool) -> None:
            self._record(auth=self.headers.get("Authorization"))
            match = re.fullmatch(rf"/{REPO}/resolve/(main|{COMMIT})/{FILENAME}", self.path)
            if not match:
                return self._send(404, b"Entry not found", head=head)
            self.send_response(302)
            self.send_header("Location", f"{hub.url}/cdn/{hub.reported_sha}")
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("X-Linked-Etag", f'"{hub.reported_sha}"')
            self.send_header("X-Linked-Size", str(len(hub.payload)))
            self.send_header("ETag", '"pointer-etag"')
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _cdn(self) -> None:
            size = len(hub.payload)
            ranged = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
            start = int(ranged[1]) if ranged else 0
            body = hub.payload[start:]
            gets = [e for e in hub.log if e["method"] == "GET" and e["path"].startswith("/cdn/")]
            cut = hub.cut_after if not gets else None
            self._record(range=self.headers.get("Range"), sent=len(body) if cut is None else cut)
            self.send_response(206 if ranged else 200)
            if ranged:
                self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("ETag", f'"{hub.reported_sha}"')
            self.end_headers()
            if cut is None:
                self.wfile.write(body)
                return
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)  # the line drops mid-file
            self.close_connection = True

        def _send(self, status: int, body: bytes, kind: str = "text/plain", head: bool = False):
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)

    return Handler


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    state = FakeHub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def box(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hub: FakeHub) -> Path:
    """A working folder (the .env lives here) with models/ in it, the test catalogue,
    HF_ENDPOINT at the fake hub, and huggingface_hub in offline mode."""
    monkeypatch.chdir(tmp_path)
    for key in list(os.environ):
        if key.upper().startswith("RODEOAI_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token_not_real")
    monkeypatch.setattr(catalog, "CATALOG", (ENTRY,))
    # As in `rodeoai`, where server.rag.embedder has switched huggingface_hub offline: the
    # explicit pull must work all the same.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return tmp_path / "models"


def cli(*args: str) -> Any:
    result = CliRunner().invoke(app, ["models", *args])
    result.text = " ".join(result.output.split())  # rich wraps long lines
    return result


def listed(name: str) -> dict[str, Any]:
    result = cli("list", "--json")
    assert result.exit_code == 0, result.output
    return next(m for m in json.loads(result.stdout)["models"] if m["name"] == name)


def test_pull_lands_the_verified_file_and_list_shows_it_pulled(box: Path, hub: FakeHub) -> None:
    assert listed("tiny-test")["pulled"] is False
    result = cli("pull", "tiny-test")
    assert result.exit_code == 0, result.output
    final = box / FILENAME
    assert final.read_bytes() == PAYLOAD
    assert hashlib.sha256(final.read_bytes()).hexdigest() == SHA
    assert f"sha256 {SHA} verified" in result.text
    assert not list(box.glob("*.part"))
    row = listed("tiny-test")
    assert row["pulled"] is True and row["size_bytes"] == len(PAYLOAD)
    assert row["in_use"] is False and listed("bundled")["in_use"] is True
    # The metadata came from the commit the HEAD reported, and the file from the CDN.
    assert {"method": "POST", "path": f"/api/models/{REPO}/paths-info/{COMMIT}"} in hub.log
    assert any(e["path"] == f"/{REPO}/resolve/{COMMIT}/{FILENAME}" for e in hub.log)
    assert hub.log[0]["auth"] == "Bearer hf_test_token_not_real"  # HF_TOKEN, for gated repos


def test_an_interrupted_pull_resumes_where_it_stopped(box: Path, hub: FakeHub) -> None:
    hub.cut_after = 100_000
    first = cli("pull", "tiny-test", "--retries", "0")
    assert first.exit_code == 2, first.output
    assert "interrupted" in first.text and "again to resume" in first.text
    assert not (box / FILENAME).exists()
    (part,) = box.glob(f"{FILENAME}.*.part")
    assert part.stat().st_size == 100_000

    second = cli("pull", "tiny-test")
    assert second.exit_code == 0, second.output
    assert "resumed at 100,000 bytes" in second.text
    assert (box / FILENAME).read_bytes() == PAYLOAD
    cdn = [e for e in hub.log if e["path"].startswith("/cdn/")]
    assert [e["range"] for e in cdn] == [None, "bytes=100000-"]
    assert cdn[1]["sent"] == len(PAYLOAD) - 100_000  # the rest only: resumed, not restarted


def test_a_dropped_connection_is_resumed_within_the_same_pull(
    box: Path, hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("server.llm.pull.RETRY_WAIT_S", 0.0)
    hub.cut_after = 50_000
    result = cli("pull", "tiny-test")
    assert result.exit_code == 0, result.output
    assert (box / FILENAME).read_bytes() == PAYLOAD
    ranges = [e["range"] for e in hub.log if e["path"].startswith("/cdn/")]
    assert ranges == [None, "bytes=50000-"]


def test_a_checksum_mismatch_is_refused_and_leaves_no_file(box: Path, hub: FakeHub) -> None:
    hub.payload = b"GGUF" + os.urandom(len(PAYLOAD) - 4)  # not the bytes the hash names
    result = cli("pull", "tiny-test")
    assert result.exit_code == 2
    assert "failed its SHA-256 check" in result.text and "Traceback" not in result.output
    assert not box.exists() or not list(box.iterdir())  # neither the file nor a part


def test_the_catalogue_hash_wins_over_the_hub(
    box: Path, hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    pinned = CatalogEntry("tiny-test", REPO, FILENAME, 0.01, "apache-2.0", sha256="ab" * 32)
    monkeypatch.setattr(catalog, "CATALOG", (pinned,))
    result = cli("pull", "tiny-test")
    assert result.exit_code == 2 and "failed its SHA-256 check" in result.text
    assert not (box / FILENAME).exists()


def test_use_writes_the_setting_that_serve_reads(box: Path, hub: FakeHub) -> None:
    env = box.parent / ".env"
    env.write_text("# mine\nRODEOAI_PORT=9000\nrodeoai_llm_model=old.gguf\nRODEOAI_TOP_K=5\n")
    refused = cli("use", "tiny-test")
    assert refused.exit_code == 2 and "is not pulled" in refused.text
    assert "old.gguf" in env.read_text()

    assert cli("pull", "tiny-test").exit_code == 0
    used = cli("use", "tiny-test")
    assert used.exit_code == 0, used.output
    assert "restart `rodeoai serve` to switch" in used.text
    assert env.read_text() == (
        f"# mine\nRODEOAI_PORT=9000\nRODEOAI_LLM_MODEL={FILENAME}\nRODEOAI_TOP_K=5\n"
    )
    settings = Settings()  # reads ./.env, as `rodeoai serve` does
    assert settings.port == 9000
    found = resolve_model_path(settings.llm_model, settings.models_dir)
    assert found.resolve() == box / FILENAME
    assert listed("tiny-test")["in_use"] is True

    back = cli("use", "bundled")
    assert back.exit_code == 0 and Settings().llm_model is None
    assert listed("bundled")["in_use"] is True


def test_remove_deletes_but_refuses_the_model_in_use_without_force(box: Path, hub: FakeHub) -> None:
    assert cli("pull", "tiny-test").exit_code == 0
    assert cli("use", "tiny-test").exit_code == 0
    refused = cli("remove", "tiny-test")
    assert refused.exit_code == 2 and "is in use" in refused.text
    assert (box / FILENAME).exists()
    assert cli("remove", "bundled").exit_code == 2

    forced = cli("remove", "tiny-test", "--force")
    assert forced.exit_code == 0, forced.output
    assert not (box / FILENAME).exists()
    assert Settings().llm_model is None  # back to the bundled model
    missing = cli("remove", "tiny-test")
    assert missing.exit_code == 2 and "is not pulled" in missing.text

    assert cli("pull", "tiny-test").exit_code == 0
    assert cli("remove", "tiny-test").exit_code == 0  # not in use: no --force needed
    assert not (box / FILENAME).exists()


def test_pull_without_a_connection_says_so(box: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")  # nothing listens
    result = cli("pull", "tiny-test")
    assert result.exit_code == 2
    assert "needs a connection to huggingface.co (or HF_ENDPOINT)" in result.text
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output


def test_unknown_names_fail_in_one_line(box: Path) -> None:
    for args in (("pull", "nope"), ("use", "nope"), ("pull", "bundled")):
        result = cli(*args)
        assert result.exit_code == 2, args
        assert result.output.strip().startswith("error"), result.output


def test_the_real_command_lists_its_subcommands(tmp_path: Path) -> None:
    result = run_cli("models", "--help", data_dir=tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    for command in ("list", "pull", "use", "remove"):
        assert command in result.stdout


def test_a_pulled_catalogue_model_brings_its_repeat_penalty(tmp_path: Path) -> None:
    """The default penalty is tuned for the tiny bundled model; a catalogue model gets its
    own, unless the operator set one."""
    from server.components import Components
    from tests.conftest import settings_for

    entry = catalog.find("qwen2.5-1.5b")
    models = tmp_path / "models"
    models.mkdir()
    (models / entry.filename).write_bytes(b"GGUF")  # never loaded: the backend loads lazily
    chosen = {"models_dir": models, "llm_model": entry.filename}
    backend = Components(settings_for(tmp_path / "a", **chosen)).llamacpp()
    default = Settings.model_fields["llm_repeat_penalty"].default
    assert backend.repeat_penalty == entry.repeat_penalty != default
    operator = Components(settings_for(tmp_path / "b", **chosen, llm_repeat_penalty=1.3))
    assert operator.llamacpp().repeat_penalty == 1.3
