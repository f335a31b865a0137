"""Sign-in with Google, GitHub or any OpenID Connect provider, through Authlib.

Each login gets a fresh `state`, `nonce` and PKCE (S256) verifier, kept server-side and
single-use. The callback checks all three, validates the ID token against the provider's
keys, and ends in our own tokens. Identity is (issuer, subject), never the e-mail.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
from authlib.integrations.httpx_client import AsyncOAuth2Client
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy import Engine

from server.accounts.security import token_hash
from server.accounts.service import AccountService, TokenPair, as_utc
from server.config import Settings
from server.db import OAuthState, utcnow, write_session
from server.errors import AppError, NotFound

log = logging.getLogger(__name__)

STATE_LIFETIME = timedelta(minutes=10)
ID_TOKEN_ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384", "PS256", "EdDSA"]


class OAuthFailed(AppError):
    status = 400
    code = "oauth_failed"


@dataclass
class Provider:
    name: str
    client_id: str
    client_secret: str
    scope: str
    discovery_url: str | None = None  # OpenID Connect; otherwise the fixed URLs below
    authorize_url: str = ""
    token_url: str = ""
    userinfo_url: str = ""
    issuer: str = ""


def configured_providers(settings: Settings) -> dict[str, Provider]:
    providers: dict[str, Provider] = {}

    def secret(value: Any) -> str:
        return value.get_secret_value() if value else ""

    if settings.oauth_google_client_id:
        providers["google"] = Provider(
            "google",
            settings.oauth_google_client_id,
            secret(settings.oauth_google_client_secret),
            "openid email profile",
            discovery_url="https://accounts.google.com/.well-known/openid-configuration",
        )
    if settings.oauth_github_client_id:
        providers["github"] = Provider(
            "github",
            settings.oauth_github_client_id,
            secret(settings.oauth_github_client_secret),
            "read:user user:email",
            authorize_url="https://github.com/login/oauth/authorize",
            token_url="https://github.com/login/oauth/access_token",
            userinfo_url="https://api.github.com/user",
            issuer="https://github.com",
        )
    if settings.oauth_oidc_client_id and settings.oauth_oidc_discovery_url:
        providers[settings.oauth_oidc_name] = Provider(
            settings.oauth_oidc_name,
            settings.oauth_oidc_client_id,
            secret(settings.oauth_oidc_client_secret),
            "openid email profile",
            discovery_url=settings.oauth_oidc_discovery_url,
        )
    return providers


class OAuthService:
    def __init__(self, engine: Engine, settings: Settings, accounts: AccountService) -> None:
        self.engine = engine
        self.settings = settings
        self.accounts = accounts
        self.providers = configured_providers(settings)
        self._discovery: dict[str, dict[str, Any]] = {}

    def _provider(self, name: str) -> Provider:
        provider = self.providers.get(name)
        if provider is None:
            raise NotFound(f"sign-in with {name!r} is not configured")
        return provider

    def redirect_uri(self, name: str) -> str:
        return f"{self.settings.public_url.rstrip('/')}/api/auth/oauth/{name}/callback"

    async def _metadata(self, provider: Provider) -> dict[str, Any]:
        if provider.discovery_url is None:
            return {
                "authorization_endpoint": provider.authorize_url,
                "token_endpoint": provider.token_url,
                "issuer": provider.issuer,
            }
        if provider.name not in self._discovery:
            try:
                async with httpx.AsyncClient(timeout=10) as http:
                    response = await http.get(provider.discovery_url)
                    response.raise_for_status()
                    self._discovery[provider.name] = response.json()
            except (httpx.HTTPError, ValueError) as exc:
                raise AppError(
                    f"cannot reach the {provider.name} sign-in service",
                    code="oauth_unavailable",
                    status=502,
                ) from exc
        return self._discovery[provider.name]

    def _client(self, provider: Provider) -> AsyncOAuth2Client:
        return AsyncOAuth2Client(
            client_id=provider.client_id,
            client_secret=provider.client_secret or None,
            scope=provider.scope,
            redirect_uri=self.redirect_uri(provider.name),
            code_challenge_method="S256",
            timeout=15,
        )

    async def login_url(self, name: str) -> str:
        provider = self._provider(name)
        metadata = await self._metadata(provider)
        state, nonce = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        verifier = secrets.token_urlsafe(64)
        with write_session(self.engine) as session:
            session.add(
                OAuthState(
                    state_hash=token_hash(state), provider=name, nonce=nonce, code_verifier=verifier
                )
            )
        extra = {"nonce": nonce} if provider.discovery_url else {}
        url, _ = self._client(provider).create_authorization_url(
            metadata["authorization_endpoint"], state=state, code_verifier=verifier, **extra
        )
        return str(url)

    def _consume_state(self, name: str, state: str) -> OAuthState:
        problem: str | None = None
        with write_session(self.engine) as session:
            row = session.get(OAuthState, token_hash(state))
            if row is None or row.provider != name:
                problem = "unknown sign-in state; start the sign-in again"
            elif row.used_at is not None:
                problem = "this sign-in link was already used; start the sign-in again"
            elif utcnow() - as_utc(row.created_at) > STATE_LIFETIME:
                problem = "the sign-in took too long; start it again"
            else:
                row.used_at = utcnow()
                session.add(row)
        if problem:
            raise OAuthFailed(problem, code="invalid_state")
        assert row is not None
        return row

    async def callback(
        self, name: str, *, code: str | None, state: str | None, error: str | None
    ) -> TokenPair:
        provider = self._provider(name)
        if error:
            raise OAuthFailed(f"the provider refused the sign-in: {error}", code="oauth_denied")
        if not code or not state:
            raise OAuthFailed("the callback is missing its code or state", code="invalid_state")
        pending = self._consume_state(name, state)
        metadata = await self._metadata(provider)
        try:
            token = await self._client(provider).fetch_token(
                metadata["token_endpoint"], code=code, code_verifier=pending.code_verifier
            )
        except Exception as exc:  # Authlib raises several families; all mean "no token"
            log.warning("token exchange with %s failed: %s", name, exc)
            raise OAuthFailed("the provider did not accept the sign-in code") from exc
        if provider.discovery_url:
            claims = await self._verify_id_token(provider, metadata, token, pending.nonce)
            issuer, subject = str(claims["iss"]), str(claims["sub"])
            email, display = claims.get("email"), claims.get("name")
        else:
            info = await self._userinfo(provider, token)
            issuer, subject = provider.issuer, str(info["id"])
            email, display = info.get("email"), info.get("name") or info.get("login")
        return self.accounts.sign_in_external(
            provider=name, issuer=issuer, subject=subject, email=email, name=display
        )

    async def _verify_id_token(
        self, provider: Provider, metadata: dict[str, Any], token: dict[str, Any], nonce: str
    ) -> dict[str, Any]:
        id_token = token.get("id_token")
        if not id_token:
            raise OAuthFailed("the provider sent no ID token", code="invalid_id_token")
        try:
            async with httpx.AsyncClient(timeout=10) as http:
                keys = KeySet.import_key_set((await http.get(metadata["jwks_uri"])).json())
            decoded = jwt.decode(id_token, keys, algorithms=ID_TOKEN_ALGORITHMS)
            jwt.JWTClaimsRegistry(
                iss={"essential": True, "value": metadata["issuer"]},
                aud={"essential": True, "value": provider.client_id},
                sub={"essential": True},
                exp={"essential": True},
                nonce={"essential": True, "value": nonce},
            ).validate(decoded.claims)
        except (JoseError, httpx.HTTPError, ValueError, KeyError) as exc:
            raise OAuthFailed(
                f"the ID token failed validation: {exc}", code="invalid_id_token"
            ) from exc
        return decoded.claims

    async def _userinfo(self, provider: Provider, token: dict[str, Any]) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.get(
                provider.userinfo_url,
                headers={
                    "Authorization": f"Bearer {token['access_token']}",
                    "Accept": "application/json",
                },
            )
        if response.status_code != 200:
            raise OAuthFailed("the provider did not return the user's profile")
        info: dict[str, Any] = response.json()
        return info
