"""Passwords (argon2id), access JWTs (HS256, pinned) and opaque secrets stored as hashes."""

from __future__ import annotations

import hashlib
import os
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import OctKey

from server.errors import AppError

ALGORITHM = "HS256"  # the only algorithm accepted: no "none", no RS/HS confusion
API_KEY_PREFIX = "rk_"


class Unauthorized(AppError):
    status = 401
    code = "unauthorized"

    def __init__(self, message: str = "sign-in required", *, code: str | None = None) -> None:
        super().__init__(message, code=code, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(AppError):
    status = 403
    code = "forbidden"


class Passwords:
    """argon2id at OWASP's minimum cost or more, with a cap on hashes running at once
    (each takes ~19 MiB and tens of milliseconds)."""

    def __init__(self, *, concurrency: int, time_cost: int = 2, memory_kib: int = 19456) -> None:
        self._hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=1)
        self._gate = threading.BoundedSemaphore(concurrency)
        # Verified against when the account does not exist, so timing does not tell.
        self._dummy = self._hasher.hash(secrets.token_urlsafe(16))

    def hash(self, password: str) -> str:
        with self._gate:
            return self._hasher.hash(password)

    def verify(self, stored: str | None, password: str) -> bool:
        with self._gate:
            try:
                return self._hasher.verify(stored or self._dummy, password) and stored is not None
            except (VerifyMismatchError, VerificationError, InvalidHashError):
                return False

    def needs_rehash(self, stored: str) -> bool:
        return self._hasher.check_needs_rehash(stored)


def token_hash(value: str) -> str:
    """Refresh tokens, API keys and one-time codes are random, so a fast hash suffices."""
    return hashlib.sha256(value.encode()).hexdigest()


def new_secret(prefix: str = "") -> str:
    return prefix + secrets.token_urlsafe(32)


def load_signing_key(configured: str | None, data_dir: Path) -> OctKey:
    """The configured secret, or one generated on first use and kept in the data folder."""
    if configured:
        if len(configured) < 32:
            raise AppError(
                "RODEOAI_SECRET_KEY must be at least 32 characters", code="weak_secret", status=500
            )
        return OctKey.import_key(configured.encode())
    path = data_dir / "secret.key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
    return OctKey.import_key(path.read_text().strip().encode())


@dataclass
class AccessClaims:
    user_id: int
    session_id: str
    token_version: int


class AccessTokens:
    def __init__(self, key: OctKey, *, issuer: str, audience: str, minutes: int) -> None:
        self.key = key
        self.issuer = issuer
        self.audience = audience
        self.ttl = minutes * 60

    def issue(self, *, user_id: int, session_id: str, token_version: int) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": str(user_id),
            "typ": "access",
            "iat": now,
            "nbf": now,
            "exp": now + self.ttl,
            "jti": uuid.uuid4().hex,
            "sid": session_id,
            "ver": token_version,
        }
        return jwt.encode(
            {"alg": ALGORITHM, "typ": "JWT"}, claims, self.key, algorithms=[ALGORITHM]
        )

    def verify(self, token: str) -> AccessClaims:
        try:
            decoded = jwt.decode(token, self.key, algorithms=[ALGORITHM])
            jwt.JWTClaimsRegistry(
                iss={"essential": True, "value": self.issuer},
                aud={"essential": True, "value": self.audience},
                exp={"essential": True},
                sub={"essential": True},
                typ={"essential": True, "value": "access"},
                sid={"essential": True},
                ver={"essential": True},
            ).validate(decoded.claims)
            claims = decoded.claims
            return AccessClaims(int(claims["sub"]), str(claims["sid"]), int(claims["ver"]))
        except (JoseError, ValueError, KeyError, TypeError) as exc:
            raise Unauthorized("invalid or expired access token", code="invalid_token") from exc
