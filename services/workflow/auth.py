"""Authentication: OIDC bearer JWTs (clerks, operators) and per-platform credentials (callbacks)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jwt

from services.workflow.settings import CallbackPlatform, WorkflowSettings

if TYPE_CHECKING:
    from services.workflow.oidc import Discovery


class AuthError(Exception):
    """Authentication failed (401) or the caller lacks a role (403)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class Principal:
    subject: str
    roles: frozenset[str]
    municipalities: frozenset[str]

    @property
    def actor(self) -> str:
        return self.subject


class TokenVerifier:
    """Verifies signature, issuer, audience and expiry; keys from the issuer's JWKS (URL, else the `jwks_uri` of
    its discovery document) or a file/inline set (dev and test)."""

    def __init__(self, settings: WorkflowSettings, discovery: Discovery | None = None) -> None:
        self.settings = settings
        self.discovery = discovery
        self._client: jwt.PyJWKClient | None = None
        self._keys: jwt.PyJWKSet | None = None
        if settings.oidc_jwks_url:
            self._client = self._jwk_client(settings.oidc_jwks_url)
        elif settings.oidc_jwks_file:
            self._keys = jwt.PyJWKSet.from_json(settings.oidc_jwks_file.read_text(encoding="utf-8"))
        elif settings.oidc_jwks_json:
            self._keys = jwt.PyJWKSet.from_json(settings.oidc_jwks_json)

    @staticmethod
    def _jwk_client(url: str) -> jwt.PyJWKClient:
        return jwt.PyJWKClient(url, cache_keys=True, lifespan=600, timeout=5)

    @property
    def configured(self) -> bool:
        return self.settings.oidc_issuer is not None and (
            self._client is not None or self._keys is not None or self.discovery is not None)

    async def _key(self, token: str) -> Any:
        if self._client is None and self._keys is None and self.discovery is not None:
            from services.workflow.oidc import OidcError

            try:
                self._client = self._jwk_client((await self.discovery.metadata()).jwks_uri)
            except OidcError as exc:
                raise AuthError(401, f"signing keys not available: {exc}") from None
        if self._client is not None:
            return (await asyncio.to_thread(self._client.get_signing_key_from_jwt, token)).key
        assert self._keys is not None
        kid = jwt.get_unverified_header(token).get("kid")
        keys = list(self._keys)
        if kid is not None:
            try:
                return self._keys[kid].key
            except KeyError:
                raise AuthError(401, "token signed with an unknown key") from None
        if len(keys) != 1:
            raise AuthError(401, "token has no key id and the key set has several keys")
        return keys[0].key

    async def _decode(self, token: str, audience: str) -> dict[str, Any]:
        if not self.configured:
            raise AuthError(401, "authentication is not configured on this instance")
        try:
            claims: dict[str, Any] = jwt.decode(
                token, await self._key(token), algorithms=self.settings.oidc_algorithms,
                audience=audience, issuer=self.settings.oidc_issuer,
                options={"require": ["exp", "iat", "sub", "iss", "aud"]}, leeway=30,
            )
        except jwt.PyJWKClientError as exc:
            raise AuthError(401, f"signing key not available: {exc}") from None
        except jwt.InvalidTokenError as exc:
            raise AuthError(401, f"invalid token: {exc}") from None
        return claims

    async def verify_id_token(self, token: str, nonce: str) -> dict[str, Any]:
        """An ID token for this client (audience = client id) carrying the nonce of the login it answers."""
        claims = await self._decode(token, self.settings.oidc_client_id)
        if not hmac.compare_digest(str(claims.get("nonce", "")), nonce):
            raise AuthError(401, "ID token does not answer this login (nonce)")
        return claims

    async def verify(self, token: str) -> Principal:
        claims = await self._decode(token, self.settings.oidc_audience)
        roles = _claim(claims, self.settings.oidc_roles_claim)
        municipalities = _claim(claims, self.settings.oidc_municipalities_claim)
        return Principal(str(claims["sub"]), frozenset(roles), frozenset(municipalities))


def _claim(claims: dict[str, Any], path: str) -> list[str]:
    """A list claim by dotted path (`realm_access.roles` works for Keycloak)."""
    value: Any = claims
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if isinstance(value, str):
        return value.split()
    return [str(v) for v in value] if isinstance(value, list) else []


def check_platform(platforms: dict[str, CallbackPlatform], authorization: str | None) -> tuple[str, CallbackPlatform]:
    """HTTP Basic with the platform id and its secret; the secret is compared as SHA-256 in constant time."""
    if not authorization or not authorization.lower().startswith("basic "):
        raise AuthError(401, "platform credentials required (HTTP Basic)")
    try:
        user, _, secret = base64.b64decode(authorization[6:].strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise AuthError(401, "malformed Basic credentials") from None
    platform = platforms.get(user)
    digest = hashlib.sha256(secret.encode()).hexdigest()
    expected = platform.secret_sha256 if platform else "0" * 64
    if not hmac.compare_digest(digest, expected.lower()) or platform is None:
        raise AuthError(401, "unknown platform or wrong secret")
    return user, platform
