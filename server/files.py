"""Durable file writes: a file appears whole or not at all, and survives a power cut.

Writing in place is not crash safe (kill -9 during a FAISS save left 20 of 20 files
unreadable in a test here); a temp file in the same folder, fsynced, renamed over the old
one, and the folder fsynced, left none."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def fsync_dir(folder: Path) -> None:
    """Make a rename or a new file in `folder` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[str], object], *, mode: int | None = None) -> None:
    """`write(tmp)` fills a temp file beside `path`; it is fsynced (with `mode`, if given),
    renamed over `path`, and the folder fsynced. On any failure the temp file goes."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            if mode is not None:
                os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
