"""Download one catalogue GGUF from the Hugging Face hub into models_dir: resumable,
SHA-256 verified, and atomic (the final name appears only once the hash matches).

Why not `hf_hub_download`: `server.rag.embedder` sets HF_HUB_OFFLINE=1 before
huggingface_hub is imported (the app itself must never download), huggingface_hub reads that
flag once at import and then refuses every request in the process; and hf_hub_download would
put the final file in place before our hash check. So the transfer is plain httpx against the
hub's own URLs (HEAD and GET /{repo}/resolve/{revision}/{file}, POST /api/models/{repo}/
paths-info/{revision} for the LFS sha256), with huggingface_hub building the URL and the
headers (user agent, HF_TOKEN). HF_ENDPOINT is read at call time, so a mirror works.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote, urljoin, urlsplit

import httpx

from server.errors import AppError
from server.files import fsync_dir
from server.llm.catalog import CatalogEntry, part_files

DEFAULT_ENDPOINT = "https://huggingface.co"
CHUNK = 1 << 20
RETRY_WAIT_S = 2.0  # between in-process retries of a dropped connection

ProgressFn = Callable[[int, int | None], None]  # (bytes on disk, total bytes or None)


class PullError(AppError):
    """A download that cannot go on; the message says what to do (the CLI exits 2)."""

    code = "pull_failed"


class _Interrupted(Exception):
    """The connection dropped mid-file; the bytes so far stay in the .part file."""


@dataclass(frozen=True)
class RemoteFile:
    url: str  # the resolve URL, pinned to the commit the metadata came from
    commit: str
    size: int | None
    sha256: str | None  # the hub's LFS sha256 of the file


@dataclass(frozen=True)
class PullResult:
    path: Path
    size: int
    sha256: str | None
    resumed_from: int = 0  # bytes a previous, interrupted pull had already fetched
    already_present: bool = False


def endpoint() -> str:
    """The hub to talk to: HF_ENDPOINT (a mirror, or a test server), else huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or "").strip().rstrip("/") or DEFAULT_ENDPOINT


def pull(
    entry: CatalogEntry, models_dir: Path, *, progress: ProgressFn | None = None, retries: int = 3
) -> PullResult:
    """Fetch `entry` into `models_dir/<filename>`, continuing a `.part` file left by an
    interrupted pull with an HTTP Range request, and retrying a dropped connection
    `retries` times in this run."""
    final = models_dir / entry.filename
    if final.is_file():
        return PullResult(final, final.stat().st_size, entry.sha256, already_present=True)
    models_dir.mkdir(parents=True, exist_ok=True)
    timeout = httpx.Timeout(30.0, connect=10.0)
    with httpx.Client(headers=_headers(), timeout=timeout, follow_redirects=False) as client:
        remote = remote_file(client, entry)
        expected = (entry.sha256 or remote.sha256 or "").lower()
        if not re.fullmatch(r"[0-9a-f]{64}", expected):
            raise PullError(
                f"{endpoint()} reports no SHA-256 for {entry.filename} and the catalogue has "
                "none, so the file could not be verified; nothing was downloaded",
                code="no_checksum",
            )
        # The hash in the name: a part of another version of the file is never continued.
        part = models_dir / f"{entry.filename}.{expected[:12]}.part"
        for stale in part_files(models_dir, entry.filename):
            if stale != part:
                stale.unlink(missing_ok=True)
        with _locked(part, entry) as fh:
            download = _Download(fh, remote.size)
            resumed_from = download.have
            _check_space(models_dir, remote.size, download.have)
            for attempt in range(retries + 1):
                try:
                    download.fetch(client, remote.url, entry, progress)
                    break
                except _Interrupted as exc:
                    if attempt == retries:
                        raise PullError(
                            f"the download of {entry.filename} was interrupted at "
                            f"{_mb(download.have)} of {_mb(download.total)} ({exc}); the part "
                            f"is kept: run `rodeoai models pull {entry.name}` again to resume",
                            code="interrupted",
                        ) from None
                    time.sleep(RETRY_WAIT_S)
            actual = download.finish()
            if actual != expected:
                part.unlink(missing_ok=True)
                raise PullError(
                    f"{entry.filename} failed its SHA-256 check (expected {expected}, got "
                    f"{actual}); the download was deleted. Pull again; if it fails again, the "
                    "server does not serve the file that hash names",
                    code="checksum_mismatch",
                )
            os.replace(part, final)
            fsync_dir(models_dir)
    return PullResult(final, download.have, expected, resumed_from=resumed_from)


def remote_file(client: httpx.Client, entry: CatalogEntry) -> RemoteFile:
    """The file's commit, size and sha256, as the hub reports them."""
    from huggingface_hub import hf_hub_url

    base = endpoint()
    url = hf_hub_url(entry.repo_id, entry.filename, revision=entry.revision, endpoint=base)
    response = _send(client, "HEAD", url)
    for _ in range(5):  # a renamed repo answers with a relative redirect; the CDN's is not
        location = response.headers.get("location", "")
        if not (response.is_redirect and location and not urlsplit(location).netloc):
            break
        response = _send(client, "HEAD", urljoin(str(response.url), location))
    if response.status_code >= 400:
        raise _status_error(response, entry)
    commit = response.headers.get("x-repo-commit") or entry.revision
    linked = response.headers.get("x-linked-size")
    size = _int(
        linked or (None if response.is_redirect else response.headers.get("content-length"))
    )
    etag = (response.headers.get("x-linked-etag") or response.headers.get("etag") or "").strip()
    etag = etag.removeprefix("W/").strip('"').lower()
    sha256, lfs_size = _paths_info(client, base, entry, commit)
    if sha256 is None and re.fullmatch(r"[0-9a-f]{64}", etag):
        sha256 = etag  # the hub's ETag of an LFS file is its sha256
    pinned = hf_hub_url(entry.repo_id, entry.filename, revision=commit, endpoint=base)
    return RemoteFile(pinned, commit, size if size is not None else lfs_size, sha256)


def _paths_info(
    client: httpx.Client, base: str, entry: CatalogEntry, commit: str
) -> tuple[str | None, int | None]:
    """(lfs sha256, size) from the hub API that HfApi.get_paths_info calls."""
    url = f"{base}/api/models/{entry.repo_id}/paths-info/{quote(commit, safe='')}"
    response = _send(client, "POST", url, data={"paths": [entry.filename]})
    if response.status_code != 200:
        return None, None
    try:
        for item in response.json():
            if item.get("path") == entry.filename and isinstance(item.get("lfs"), dict):
                return str(item["lfs"]["oid"]).lower(), _int(item["lfs"].get("size"))
    except (ValueError, KeyError, TypeError, AttributeError):
        pass
    return None, None


class _Download:
    """The .part file, the running hash of its bytes, and one GET that appends to it."""

    def __init__(self, fh: BinaryIO, total: int | None) -> None:
        self.fh = fh
        self.total = total
        self.hasher = hashlib.sha256()
        fh.seek(0)
        for block in iter(lambda: fh.read(CHUNK), b""):
            self.hasher.update(block)
        self.have = fh.tell()
        if total is not None and self.have > total:
            self._restart()

    def _restart(self) -> None:
        self.fh.seek(0)
        self.fh.truncate()
        self.hasher = hashlib.sha256()
        self.have = 0

    def fetch(
        self, client: httpx.Client, url: str, entry: CatalogEntry, progress: ProgressFn | None
    ) -> None:
        if self.total is not None and self.have == self.total:
            return
        headers = {"Range": f"bytes={self.have}-"} if self.have else {}
        try:
            with client.stream("GET", url, headers=headers, follow_redirects=True) as response:
                if response.status_code == 416:  # the part does not fit the file: start over
                    self._restart()
                    raise _Interrupted("the server refused the resume range")
                if response.status_code >= 400:
                    raise _status_error(response, entry)
                if self.have and not _continues(response, self.have):
                    self._restart()  # the server ignored the Range header: take it all
                if self.total is None:
                    self.total = _total(response)
                if progress:
                    progress(self.have, self.total)
                for chunk in response.iter_bytes():  # as they come: a drop loses nothing
                    self.fh.write(chunk)
                    self.hasher.update(chunk)
                    self.have += len(chunk)
                    if progress:
                        progress(self.have, self.total)
        except httpx.TransportError as exc:
            raise _Interrupted(str(exc) or type(exc).__name__) from exc
        if self.total is not None and self.have != self.total:
            if self.have > self.total:
                self._restart()
            raise _Interrupted("the connection closed early")

    def finish(self) -> str:
        self.fh.flush()
        os.fsync(self.fh.fileno())
        return self.hasher.hexdigest()


@contextmanager
def _locked(part: Path, entry: CatalogEntry) -> Iterator[BinaryIO]:
    """The .part file, opened for appending and locked against a second pull of it."""
    fh = os.fdopen(os.open(part, os.O_RDWR | os.O_CREAT, 0o644), "r+b")
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PullError(
                f"another `rodeoai models pull {entry.name}` is already downloading it",
                code="busy",
            ) from None
        yield fh
    finally:
        fh.close()


def _send(client: httpx.Client, method: str, url: str, **kwargs: object) -> httpx.Response:
    try:
        return client.request(method, url, **kwargs)  # type: ignore[arg-type]
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        raise PullError(
            f"`rodeoai models pull` needs a connection to huggingface.co (or HF_ENDPOINT): "
            f"{endpoint()} cannot be reached ({exc or type(exc).__name__})",
            code="offline",
        ) from None
    except httpx.TransportError as exc:
        raise PullError(
            f"talking to {endpoint()} failed: {exc or type(exc).__name__}", code="hub_error"
        ) from None


def _status_error(response: httpx.Response, entry: CatalogEntry) -> PullError:
    what = f"{entry.repo_id}/{entry.filename}"
    status = response.status_code
    if status in (401, 403):
        return PullError(
            f"{endpoint()} refused {what} ({status}): the repository is gated, private or "
            "missing; accept its licence on huggingface.co and set HF_TOKEN",
            code="hub_refused",
        )
    if status == 404:
        return PullError(f"{what} is not on {endpoint()} (404)", code="not_on_hub")
    return PullError(f"{endpoint()} answered {status} for {what}", code="hub_error")


def _continues(response: httpx.Response, offset: int) -> bool:
    """Whether a response to `Range: bytes=offset-` really starts at offset."""
    match = re.match(r"bytes (\d+)-", response.headers.get("content-range", ""))
    return response.status_code == 206 and match is not None and int(match[1]) == offset


def _total(response: httpx.Response) -> int | None:
    if response.headers.get("content-encoding", "identity").lower() != "identity":
        return None
    content_range = response.headers.get("content-range", "")
    if "/" in content_range and not content_range.endswith("*"):
        return _int(content_range.rsplit("/", 1)[1])
    return _int(response.headers.get("content-length"))


def _check_space(folder: Path, total: int | None, have: int) -> None:
    if total is None:
        return
    free = shutil.disk_usage(folder).free
    if total - have > free:
        raise PullError(
            f"not enough disk space in {folder}: {_mb(total - have)} needed, {_mb(free)} free",
            code="disk_full",
        )


def _headers() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    from huggingface_hub.utils import build_hf_headers

    try:
        ours = version("rodeoai")
    except PackageNotFoundError:  # a source tree that was never installed
        ours = "dev"
    headers = build_hf_headers(library_name="rodeoai", library_version=ours)
    headers["Accept-Encoding"] = "identity"  # sizes and ranges are of the file itself
    return headers


def _int(value: object) -> int | None:
    try:
        return int(str(value)) if value is not None else None
    except ValueError:
        return None


def _mb(size: int | None) -> str:
    return "?" if size is None else f"{size / 1e6:,.1f} MB"
