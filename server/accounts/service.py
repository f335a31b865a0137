"""Accounts: registration, sign-in, rotating refresh tokens, API keys and admin actions.

Every answer about credentials is the same for known and unknown e-mails, and every
session-ending event (logout, password change, disabling) revokes server-side state, so a
stolen token stops working at once rather than at expiry.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func
from sqlmodel import Session, col, select

from server.accounts.ratelimit import RateLimiter
from server.accounts.security import (
    API_KEY_PREFIX,
    AccessTokens,
    Passwords,
    Unauthorized,
    new_secret,
    token_hash,
)
from server.config import Settings
from server.db import (
    ApiKey,
    OAuthIdentity,
    PasswordReset,
    RefreshToken,
    SessionFamily,
    User,
    read_session,
    utcnow,
    write_session,
)
from server.errors import AppError, Conflict, InvalidInput, NotFound
from server.notify import Outbox, messages

log = logging.getLogger(__name__)

ROLES = ("user", "expert", "admin")
RESET_MINUTES = 60
# With e-mail on, reset mails per address (known or not, so a 429 says nothing about the
# account): a stranger cannot fill someone's inbox from many addresses.
RESET_MAIL_LIMIT = "5/hour"
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s]{2,63}$")


def as_utc(moment: datetime) -> datetime:
    """SQLite hands datetimes back without a zone; they were stored as UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def normalise_email(email: str) -> str:
    email = email.strip().lower()
    if not _EMAIL.match(email):
        raise InvalidInput("that is not a valid e-mail address", code="invalid_email")
    return email


@dataclass
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    token_type: str = "bearer"


@dataclass
class Principal:
    """Who is calling: a signed-in user, or a guest known only by address."""

    user: User | None
    guest_key: str | None = None
    via: str = "guest"
    session_id: str | None = None

    @property
    def rate_key(self) -> str:
        return f"user:{self.user.id}" if self.user else f"guest:{self.guest_key}"


class AccountService:
    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        passwords: Passwords,
        tokens: AccessTokens,
        limiter: RateLimiter,
        mail: Outbox | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.passwords = passwords
        self.tokens = tokens
        self.limiter = limiter
        self.mail = mail

    @property
    def mails(self) -> bool:
        """Whether account mail (welcome, reset links) goes out; off, resets are handed
        over by an administrator as before."""
        return self.mail is not None and self.mail.enabled

    def _welcome(self, session: Session, user: User) -> None:
        if self.mail is not None:
            mail = messages.welcome(
                name=user.display_name, email=user.email, base_url=self.mail.config.public_url
            )
            self.mail.enqueue(session, mail, key=f"welcome:user:{user.id}", to=user.email)

    # --- passwords --------------------------------------------------------------------
    def _check_password_policy(self, password: str, email: str) -> None:
        if len(password) < self.settings.min_password_length:
            raise InvalidInput(
                f"passwords need at least {self.settings.min_password_length} characters",
                code="weak_password",
            )
        if len(password) > 1024:
            raise InvalidInput("passwords may be at most 1024 characters", code="weak_password")
        if password.strip().lower() == email:
            raise InvalidInput("the password must not be the e-mail address", code="weak_password")

    def register(self, *, email: str, password: str, display_name: str, ip: str) -> None:
        """Creates the account if the address is free. The reply never says which happened,
        and the password is hashed either way so the timing does not say it either."""
        self.limiter.hit(self.settings.register_ip_limit, "register-ip", ip, what="sign-ups")
        email = normalise_email(email)
        self._check_password_policy(password, email)
        hashed = self.passwords.hash(password)
        with write_session(self.engine) as session:
            if session.exec(select(User).where(User.email == email)).first():
                log.info("registration for an existing address ignored")
                return
            user = User(email=email, display_name=display_name.strip()[:100], password_hash=hashed)
            session.add(user)
            session.flush()
            self._welcome(session, user)  # queued in the account's own transaction

    def login(self, *, email: str, password: str, ip: str) -> TokenPair:
        self.limiter.hit(self.settings.login_ip_limit, "login-ip", ip, what="sign-in attempts")
        key = email.strip().lower()
        # Counted before the hash runs, so no more than the limit are ever evaluated.
        self.limiter.hit(
            self.settings.login_account_limit,
            "login-account",
            key,
            what="sign-in attempts for this account",
        )
        with read_session(self.engine) as session:
            user = session.exec(select(User).where(User.email == key)).first()
        ok = self.passwords.verify(user.password_hash if user else None, password)
        if not ok or user is None or user.disabled:
            raise Unauthorized("wrong e-mail or password", code="invalid_credentials")
        if user.password_hash and self.passwords.needs_rehash(user.password_hash):
            self._set_password_hash(user.id, self.passwords.hash(password), revoke=False)
        return self.start_session(user)

    def change_password(self, user: User, *, current: str, new: str) -> None:
        if not self.passwords.verify(user.password_hash, current):
            raise Unauthorized("the current password is wrong", code="invalid_credentials")
        self._check_password_policy(new, user.email)
        self._set_password_hash(user.id, self.passwords.hash(new), revoke=True)

    def _set_password_hash(self, user_id: int | None, hashed: str, *, revoke: bool) -> None:
        with write_session(self.engine) as session:
            user = session.get(User, user_id)
            assert user is not None
            user.password_hash = hashed
            user.updated_at = utcnow()
            if revoke:
                # Keys go too: a password change is what a user does after a leak, and a
                # key made with the stolen password must not outlive it.
                self._revoke_all(session, user, "password changed")
                self._revoke_api_keys(session, user.id)
            session.add(user)

    def request_password_reset(self, *, email: str, ip: str, deliver: bool = True) -> str | None:
        """Returns the one-time token for the CLI to hand over; the HTTP route never shows it.
        With e-mail on (and `deliver`), the link is mailed to the address, queued in the same
        transaction as the token; with it off, delivery is by an administrator."""
        self.limiter.hit(self.settings.register_ip_limit, "reset-ip", ip, what="reset requests")
        key = email.strip().lower()
        mailing = deliver and self.mails
        if mailing:
            self.limiter.hit(RESET_MAIL_LIMIT, "reset-mail", key, what="reset mails")
        token = new_secret()
        expires = utcnow() + timedelta(minutes=RESET_MINUTES)
        with write_session(self.engine) as session:
            user = session.exec(select(User).where(User.email == key)).first()
            if user is None:
                return None
            hashed_token = token_hash(token)
            session.add(
                PasswordReset(token_hash=hashed_token, user_id=user.id or 0, expires_at=expires)
            )
            if mailing and self.mail is not None:
                mail = messages.password_reset(
                    email=user.email,
                    token=token,
                    base_url=self.mail.config.public_url,
                    minutes=RESET_MINUTES,
                )
                self.mail.enqueue(
                    session,
                    mail,
                    key=f"password_reset:{hashed_token}",
                    to=user.email,
                    expires_at=expires,  # a link that no longer works is not sent late
                )
        log.info("password reset created for user %s", user.id)
        return token

    def confirm_password_reset(self, *, token: str, new_password: str) -> None:
        with read_session(self.engine) as session:
            reset = session.get(PasswordReset, token_hash(token))
            user = session.get(User, reset.user_id) if reset else None
        if not reset or not user or reset.used_at or as_utc(reset.expires_at) < utcnow():
            raise InvalidInput("this reset link is invalid or has expired", code="invalid_reset")
        self._check_password_policy(new_password, user.email)
        hashed = self.passwords.hash(new_password)
        with write_session(self.engine) as session:
            row = session.get(PasswordReset, token_hash(token))
            if row is None or row.used_at:
                raise InvalidInput("this reset link was already used", code="invalid_reset")
            row.used_at = utcnow()
            session.add(row)
        self._set_password_hash(user.id, hashed, revoke=True)

    # --- sessions -----------------------------------------------------------------------
    def start_session(self, user: User) -> TokenPair:
        family = uuid.uuid4().hex
        refresh = new_secret()
        with write_session(self.engine) as session:
            session.add(SessionFamily(id=family, user_id=user.id or 0))
            session.flush()
            session.add(self._refresh_row(family, refresh))
        return self._pair(user, family, refresh)

    def _refresh_row(self, family: str, refresh: str) -> RefreshToken:
        expires = utcnow() + timedelta(days=self.settings.refresh_token_days)
        return RefreshToken(family_id=family, token_hash=token_hash(refresh), expires_at=expires)

    def _pair(self, user: User, family: str, refresh: str) -> TokenPair:
        access = self.tokens.issue(
            user_id=user.id or 0, session_id=family, token_version=user.token_version
        )
        return TokenPair(access, refresh, self.tokens.ttl)

    def refresh(self, *, refresh_token: str, ip: str) -> TokenPair:
        """Rotate: the presented token is spent and a new one issued in the same family.
        A spent token presented again means it leaked: the whole family is revoked."""
        self.limiter.hit(self.settings.refresh_ip_limit, "refresh-ip", ip, what="refreshes")
        failure: str | None = None
        with write_session(self.engine) as session:
            row = session.exec(
                select(RefreshToken).where(RefreshToken.token_hash == token_hash(refresh_token))
            ).first()
            family = session.get(SessionFamily, row.family_id) if row else None
            user = session.get(User, family.user_id) if family else None
            if row is None or family is None or user is None:
                failure = "unknown refresh token"
            elif family.revoked_at is not None:
                failure = "this session has ended"
            elif row.used_at is not None:
                family.revoked_at, family.revoked_reason = utcnow(), "refresh token reused"
                session.add(family)
                log.warning("refresh token reuse: revoked session family of user %s", user.id)
                failure = "refresh token already used; the session was ended for safety"
            elif as_utc(row.expires_at) < utcnow() or user.disabled:
                failure = "this session has expired"
            else:
                row.used_at = utcnow()
                session.add(row)
                fresh = new_secret()
                session.add(self._refresh_row(family.id, fresh))
        if failure:
            raise Unauthorized(failure, code="invalid_refresh_token")
        assert user is not None and family is not None
        return self._pair(user, family.id, fresh)

    def logout(self, principal: Principal) -> None:
        if principal.session_id is None:
            return
        with write_session(self.engine) as session:
            family = session.get(SessionFamily, principal.session_id)
            if family and family.revoked_at is None:
                family.revoked_at, family.revoked_reason = utcnow(), "logout"
                session.add(family)

    def _revoke_all(self, session: Session, user: User, reason: str) -> None:
        user.token_version += 1  # voids every access token already issued
        families = session.exec(
            select(SessionFamily).where(
                SessionFamily.user_id == user.id, col(SessionFamily.revoked_at).is_(None)
            )
        ).all()
        for family in families:
            family.revoked_at, family.revoked_reason = utcnow(), reason
            session.add(family)

    # --- authentication ---------------------------------------------------------------
    def authenticate(self, bearer: str) -> Principal:
        if bearer.startswith(API_KEY_PREFIX):
            return self._authenticate_api_key(bearer)
        claims = self.tokens.verify(bearer)
        with read_session(self.engine) as session:
            user = session.get(User, claims.user_id)
            family = session.get(SessionFamily, claims.session_id)
        if (
            user is None
            or user.disabled
            or user.token_version != claims.token_version
            or family is None
            or family.revoked_at is not None
            or family.user_id != user.id
        ):
            raise Unauthorized("this token has been revoked", code="invalid_token")
        return Principal(user=user, via="jwt", session_id=claims.session_id)

    def _authenticate_api_key(self, raw: str) -> Principal:
        with read_session(self.engine) as session:
            key = session.exec(select(ApiKey).where(ApiKey.key_hash == token_hash(raw))).first()
            user = session.get(User, key.user_id) if key else None
        if key is None or key.revoked_at is not None or user is None or user.disabled:
            raise Unauthorized("invalid API key", code="invalid_token")
        last = as_utc(key.last_used_at) if key.last_used_at else None
        if last is None or utcnow() - last > timedelta(minutes=1):  # cheap, coarse tracking
            with write_session(self.engine) as session:
                row = session.get(ApiKey, key.id)
                if row:
                    row.last_used_at = utcnow()
                    session.add(row)
        return Principal(user=user, via="api_key")

    # --- API keys ---------------------------------------------------------------------
    def create_api_key(self, user: User, name: str) -> tuple[ApiKey, str]:
        raw = new_secret(API_KEY_PREFIX)
        key = ApiKey(
            user_id=user.id or 0,
            name=name.strip()[:100] or "key",
            prefix=raw[:10],
            key_hash=token_hash(raw),
        )
        with write_session(self.engine) as session:
            session.add(key)
            session.flush()
            session.refresh(key)
        return key, raw

    def list_api_keys(self, user: User) -> list[ApiKey]:
        with read_session(self.engine) as session:
            return list(
                session.exec(
                    select(ApiKey).where(ApiKey.user_id == user.id).order_by(col(ApiKey.id))
                ).all()
            )

    def revoke_api_key(self, user: User, key_id: int) -> None:
        with write_session(self.engine) as session:
            key = session.get(ApiKey, key_id)
            if key is None or key.user_id != user.id:  # someone else's key looks missing
                raise NotFound("no such API key")
            if key.revoked_at is None:
                key.revoked_at = utcnow()
                session.add(key)

    def revoke_all_api_keys(self, user: User) -> int:
        """Revoke every live key of the user; returns how many were live."""
        with write_session(self.engine) as session:
            return self._revoke_api_keys(session, user.id)

    @staticmethod
    def _revoke_api_keys(session: Session, user_id: int | None) -> int:
        keys = session.exec(
            select(ApiKey).where(ApiKey.user_id == user_id, col(ApiKey.revoked_at).is_(None))
        ).all()
        for key in keys:
            key.revoked_at = utcnow()
            session.add(key)
        return len(keys)

    # --- profile and administration ---------------------------------------------------
    def update_profile(self, user: User, changes: dict[str, Any]) -> User:
        with write_session(self.engine) as session:
            row = session.get(User, user.id)
            assert row is not None
            if "display_name" in changes:
                row.display_name = str(changes["display_name"] or "").strip()[:100]
            if "skill_level" in changes:
                row.skill_level = changes["skill_level"]
            if "events" in changes:
                row.events_json = json.dumps(changes["events"] or [])
            if "classification" in changes:
                row.classification = changes["classification"]
            row.updated_at = utcnow()
            session.add(row)
        return row

    def find_by_email(self, email: str) -> User:
        with read_session(self.engine) as session:
            user = session.exec(select(User).where(User.email == email.strip().lower())).first()
        if user is None:
            raise NotFound(f"no account for {email}")
        return user

    def list_users(self, *, offset: int = 0, limit: int = 50) -> list[User]:
        with read_session(self.engine) as session:
            return list(
                session.exec(select(User).order_by(col(User.id)).offset(offset).limit(limit)).all()
            )

    def admin_update(
        self, user_id: int, *, role: str | None = None, disabled: bool | None = None
    ) -> User:
        with write_session(self.engine) as session:
            user = session.get(User, user_id)
            if user is None:
                raise NotFound("no such user")
            if role is not None and role not in ROLES:
                raise InvalidInput(f"role must be one of {', '.join(ROLES)}", code="invalid_role")
            loses_admin = (
                user.role == "admin"
                and not user.disabled
                and ((role is not None and role != "admin") or disabled is True)
            )
            if loses_admin and self._active_admins(session) <= 1:
                raise Conflict(
                    "this is the last active administrator; make another one first",
                    code="last_admin",
                )
            if role is not None:
                user.role = role
            if disabled is not None and disabled != user.disabled:
                user.disabled = disabled
                if disabled:
                    self._revoke_all(session, user, "disabled by an administrator")
            user.updated_at = utcnow()
            session.add(user)
        return user

    @staticmethod
    def _active_admins(session: Session) -> int:
        # Counted inside the caller's BEGIN IMMEDIATE, so two demotions cannot both pass.
        return int(
            session.exec(
                select(func.count())
                .select_from(User)
                .where(User.role == "admin", col(User.disabled).is_(False))
            ).one()
        )

    def create_admin(self, email: str, password: str) -> User:
        email = normalise_email(email)
        self._check_password_policy(password, email)
        hashed = self.passwords.hash(password)
        with write_session(self.engine) as session:
            user = session.exec(select(User).where(User.email == email)).first()
            if user is None:
                user = User(email=email, password_hash=hashed)
            user.role, user.disabled = "admin", False
            user.password_hash = user.password_hash or hashed
            session.add(user)
        return user

    # --- external identities ----------------------------------------------------------
    def sign_in_external(
        self, *, provider: str, issuer: str, subject: str, email: str | None, name: str | None
    ) -> TokenPair:
        """Find the user by (issuer, subject). A new identity gets a new account; an e-mail
        that already belongs to an account is refused rather than silently linked."""
        with write_session(self.engine) as session:
            identity = session.exec(
                select(OAuthIdentity).where(
                    OAuthIdentity.issuer == issuer, OAuthIdentity.subject == subject
                )
            ).first()
            if identity:
                user = session.get(User, identity.user_id)
            else:
                address = (email or "").strip().lower()
                if not _EMAIL.match(address):
                    address = f"{provider}-{subject}@users.noreply.invalid"
                if session.exec(select(User).where(User.email == address)).first():
                    raise AppError(
                        "an account with this e-mail already exists; sign in with its password "
                        "(accounts are never linked by e-mail alone)",
                        code="email_in_use",
                        status=409,
                    )
                user = User(email=address, display_name=(name or "")[:100])
                session.add(user)
                session.flush()
                self._welcome(session, user)
                session.add(
                    OAuthIdentity(
                        user_id=user.id or 0,
                        provider=provider,
                        issuer=issuer,
                        subject=subject,
                        email=email,
                    )
                )
        if user is None or user.disabled:
            raise Unauthorized("this account is disabled", code="invalid_credentials")
        return self.start_session(user)
