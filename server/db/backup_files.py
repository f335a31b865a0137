"""The files of a backup folder: checksums, durable writes and the FAISS index's copy.

Every file is fsynced before the manifest that vouches for it is written, and the manifest
is written by temp file, fsync and rename, so a crash leaves either no manifest or a true one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from functools import partial
from pathlib import Path
from typing import Any

from server.errors import AppError
from server.files import atomic_write

MANIFEST = "manifest.json"
INDEX = "index"  # the FAISS index's folder, in the data folder and in a backup
INDEX_MANIFEST = "manifest.json"  # the index's own manifest (server.rag.vector_index)
DATABASE_FILES = {"sqlite": "rodeoai.db", "postgresql": "rodeoai.dump"}
_BLOCK = 1 << 20


class BackupError(AppError):
    """A backup or restore was refused or failed; the message says why and what to do."""

    status = 409
    code = "backup_error"


def prepare_empty(dest: Path) -> bool:
    """Make sure `dest` is an empty folder; True when it had to be created."""
    if dest.exists() or dest.is_symlink():
        if not dest.is_dir():
            raise BackupError(f"{dest} exists and is not a folder: give an empty or a new folder")
        if any(dest.iterdir()):
            raise BackupError(f"{dest} is not empty: a backup goes into an empty or a new folder")
        return False
    dest.mkdir(parents=True)
    return True


def clear(dest: Path, *, created: bool) -> None:
    """Undo a failed backup: the folder goes back to empty (or away, if it was new)."""
    if created:
        shutil.rmtree(dest, ignore_errors=True)
        return
    for child in dest.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def checksums(folder: Path, *, skip: str) -> dict[str, str]:
    return {
        path.relative_to(folder).as_posix(): sha256(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.relative_to(folder).as_posix() != skip
    }


def inside(folder: Path, name: str) -> Path | None:
    """`folder/name`, or None for a name that would leave the folder."""
    path = (folder / name).resolve()
    return path if path.is_relative_to(folder.resolve()) else None


def fsync(path: Path) -> None:
    with path.open("rb") as handle:
        os.fsync(handle.fileno())


def copy(source: Path, target: Path) -> str:
    """Copy a file at rest (never a live database), fsync it, and return its sha256."""
    digest = hashlib.sha256()
    with source.open("rb") as src, target.open("wb") as dst:
        while block := src.read(_BLOCK):
            digest.update(block)
            dst.write(block)
        dst.flush()
        os.fsync(dst.fileno())
    return digest.hexdigest()


def write_atomic(path: Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def copy_index(index_dir: Path, target: Path) -> dict[str, Any] | None:
    """Copy the index manifest and the file it names; None when there is no usable pair
    (none yet, or the server replaced it mid-copy: the caller then leaves the index out)."""
    try:
        raw = (index_dir / INDEX_MANIFEST).read_bytes()
        manifest = json.loads(raw)
        name = str(manifest["file"])
        if Path(name).name != name or name == INDEX_MANIFEST:
            return None
        target.mkdir()
        copy(index_dir / name, target / name)
    except (OSError, ValueError, KeyError, TypeError):
        shutil.rmtree(target, ignore_errors=True)
        return None
    write_atomic(target / INDEX_MANIFEST, raw)
    return manifest if isinstance(manifest, dict) else None


def install_index(source: Path, index_dir: Path, manifest: dict[str, Any]) -> None:
    """Put a backup's index in place: the file first, then the manifest that names it."""
    name = str(manifest["file"])
    if Path(name).name != name:
        raise BackupError(f"the backup's index names a file outside its folder: {name}")
    index_dir.mkdir(parents=True, exist_ok=True)
    for part in (name, INDEX_MANIFEST):
        atomic_write(index_dir / part, partial(_copy_to, source / part))


def _copy_to(source: Path, temp: str) -> None:
    copy(source, Path(temp))
