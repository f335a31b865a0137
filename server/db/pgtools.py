"""PostgreSQL's own dump and restore programs, for `rodeoai backup` and `restore`.

pg_dump refuses a server newer than itself, so of the copies found (PATH, and the binaries
PyPI pgserver ships) the newest is used, with pg_restore from the same folder. They get the
database as a libpq connection string without the password, which goes in PGPASSWORD: it
never shows in a process list or a message.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from server.db.backup_files import BackupError

LOCK_WAIT_MS = 60_000  # how long pg_dump waits for a table another session locked
_DUMPING = re.compile(r'dumping contents of table "?([^"\s]+)"?')
_TABLE = re.compile(r"^\d+; \d+ \d+ TABLE (\S+) (\S+) ")


@dataclass(frozen=True)
class Libpq:
    """How the programs reach the database: a connection string and the environment."""

    conninfo: str
    env: dict[str, str]
    password: str

    def scrub(self, text: str) -> str:
        return text.replace(self.password, "***") if self.password else text


def libpq(url: str) -> Libpq:
    """SQLAlchemy's `postgresql+psycopg://user:pw@host:port/db?host=/socket` as libpq takes
    it. Query parameters (host for a Unix socket, sslmode, ...) are libpq's own names."""
    parsed = make_url(url)
    params: dict[str, str] = {}
    for key, value in (
        ("dbname", parsed.database),
        ("user", parsed.username),
        ("host", parsed.host),
        ("port", str(parsed.port) if parsed.port else None),
    ):
        if value:
            params[key] = value
    for key, given in parsed.query.items():
        params[key] = ",".join(given) if isinstance(given, tuple) else str(given)
    params.pop("password", None)
    conninfo = " ".join(f"{key}={_quote(value)}" for key, value in params.items())
    env = dict(os.environ)
    password = parsed.password or ""
    if password:
        env["PGPASSWORD"] = password
    return Libpq(conninfo, env, password)


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass(frozen=True)
class PgTools:
    pg_dump: Path
    pg_restore: Path

    @classmethod
    def find(cls) -> PgTools:
        found = [Path(p) for p in (shutil.which("pg_dump"),) if p]
        spec = importlib.util.find_spec("pgserver")  # found, not imported: no side effects
        for folder in (spec.submodule_search_locations or []) if spec else []:
            found.append(Path(folder) / "pginstall" / "bin" / "pg_dump")
        usable = [(_major(p), p) for p in found if (p.parent / "pg_restore").exists()]
        usable = [(major, p) for major, p in usable if major]
        if not usable:
            raise BackupError(
                "pg_dump and pg_restore were not found: install PostgreSQL's client programs "
                "(apt-get install postgresql-client) or PyPI pgserver"
            )
        _, newest = max(usable, key=lambda pair: pair[0])
        return cls(newest, newest.parent / "pg_restore")

    def dump(
        self,
        url: str,
        target: Path,
        *,
        snapshot: str,
        tables: int,
        progress: Callable[[int, int], None] | None,
    ) -> None:
        """A custom-format dump as of the exported `snapshot` (a transaction the caller
        holds open), reporting the tables dumped so far."""
        db = libpq(url)
        command = [
            str(self.pg_dump),
            "--format=custom",
            "--verbose",
            f"--lock-wait-timeout={LOCK_WAIT_MS}",
            f"--snapshot={snapshot}",
            f"--file={target}",
            f"--dbname={db.conninfo}",
        ]
        errors: deque[str] = deque(maxlen=3)
        last: deque[str] = deque(maxlen=2)
        done = 0
        with subprocess.Popen(
            command,
            env=db.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        ) as process:
            assert process.stderr is not None
            for line in process.stderr:
                if _DUMPING.search(line):
                    done += 1
                    if progress:
                        progress(min(done, tables), tables)
                elif re.search(r"error|fatal|detail", line, re.IGNORECASE):
                    errors.append(line.strip())
                last.append(line.strip())
            code = process.wait()
        if code:
            why = " / ".join(errors or last) or f"exit status {code}"
            raise BackupError(f"pg_dump failed: {db.scrub(why)}")

    def tables_in(self, dump: Path) -> set[str]:
        """The tables a dump holds; running `pg_restore --list` also proves it readable."""
        done = self._run([str(self.pg_restore), "--list", str(dump)], env=dict(os.environ))
        if done.returncode:
            raise BackupError(f"{dump} is not a readable dump: {_last_line(done.stderr)}")
        return {m.group(2) for line in done.stdout.splitlines() if (m := _TABLE.match(line))}

    def restore(self, url: str, dump: Path) -> None:
        """Replace the dump's objects in the database, all in one transaction."""
        db = libpq(url)
        command = [
            str(self.pg_restore),
            "--clean",
            "--if-exists",
            "--no-owner",
            "--no-acl",
            "--single-transaction",
            "--exit-on-error",
            f"--dbname={db.conninfo}",
            str(dump),
        ]
        done = self._run(command, env=db.env)
        if done.returncode:
            raise BackupError(f"pg_restore failed: {db.scrub(_last_line(done.stderr))}")

    @staticmethod
    def _run(command: list[str], *, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            command, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True
        )


def _major(program: Path) -> int:
    """The major version of a pg_dump, or 0 when it does not run."""
    try:
        done = subprocess.run(
            [str(program), "--version"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return 0
    match = re.search(r"(\d+)(?:\.\d+)?", done.stdout)
    return int(match.group(1)) if done.returncode == 0 and match else 0


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no message"
