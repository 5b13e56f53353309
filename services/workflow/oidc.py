"""OpenID Connect relying party of the clerk view: discovery, Authorization Code + PKCE, logout URL.

Any provider that publishes `{issuer}/.well-known/openid-configuration` works (Keycloak locally, a city's
IdP in production). Authlib makes the PKCE challenge and the authorization URL, the code exchange is one
httpx request; tokens are verified by `TokenVerifier` (PyJWT) against the keys of the same discovery document.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
from authlib.common.security import generate_token
from authlib.common.urls import add_params_to_uri
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from pydantic import BaseModel, ConfigDict

from services.workflow.settings import WorkflowSettings

DISCOVERY_TTL_S = 3600.0


class OidcError(Exception):
    """The provider could not be reached or answered something unusable."""


class ProviderMetadata(BaseModel):
    """The fields of the discovery document this service uses."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    end_session_endpoint: str | None = None
    code_challenge_methods_supported: list[str] | None = None


@dataclass(frozen=True)
class AuthorizationRequest:
    url: str
    state: str
    nonce: str
    code_verifier: str


@dataclass(frozen=True)
class TokenSet:
    access_token: str
    id_token: str


class Discovery:
    """The issuer's discovery document, fetched on first use and refreshed after an hour."""

    def __init__(self, settings: WorkflowSettings, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.settings = settings
        self.transport = transport
        self._cached: tuple[float, ProviderMetadata] | None = None

    @property
    def configured(self) -> bool:
        return self.settings.oidc_issuer is not None

    async def metadata(self) -> ProviderMetadata:
        if self._cached is not None and time.monotonic() - self._cached[0] < DISCOVERY_TTL_S:
            return self._cached[1]
        issuer = self.settings.oidc_issuer
        if issuer is None:
            raise OidcError("no OIDC issuer configured (KP_OIDC_ISSUER)")
        url = f"{issuer.rstrip('/')}/.well-known/openid-configuration"
        try:
            async with httpx.AsyncClient(timeout=5, transport=self.transport) as client:
                response = await client.get(url)
                response.raise_for_status()
                meta = ProviderMetadata.model_validate(response.json())
        except (httpx.HTTPError, ValueError) as exc:
            raise OidcError(f"discovery at {url} failed: {exc}") from None
        if meta.issuer != issuer:  # OpenID Connect Discovery 1.0, section 4.3
            raise OidcError(f"discovery answered issuer {meta.issuer!r}, expected {issuer!r}")
        self._cached = (time.monotonic(), meta)
        return meta


class RelyingParty:
    """Builds authorization requests (S256 PKCE, state, nonce), exchanges codes and builds logout URLs."""

    def __init__(self, settings: WorkflowSettings, discovery: Discovery) -> None:
        self.settings = settings
        self.discovery = discovery

    async def authorization_request(self, redirect_uri: str) -> AuthorizationRequest:
        meta = await self.discovery.metadata()
        methods = meta.code_challenge_methods_supported
        if methods is not None and "S256" not in methods:
            raise OidcError(f"the provider does not offer PKCE with S256 (only {methods})")
        state, nonce, verifier = generate_token(32), generate_token(32), generate_token(64)
        url = add_params_to_uri(meta.authorization_endpoint, [
            ("response_type", "code"), ("client_id", self.settings.oidc_client_id), ("redirect_uri", redirect_uri),
            ("scope", self.settings.oidc_scopes), ("state", state), ("nonce", nonce),
            ("code_challenge", create_s256_code_challenge(verifier)), ("code_challenge_method", "S256"),
        ])
        return AuthorizationRequest(str(url), state, nonce, verifier)

    async def exchange(self, code: str, code_verifier: str, redirect_uri: str) -> TokenSet:
        """Authorization code → tokens at the token endpoint (client secret by HTTP Basic when one is set)."""
        meta = await self.discovery.metadata()
        secret = self.settings.oidc_client_secret
        auth = httpx.BasicAuth(self.settings.oidc_client_id, secret.get_secret_value()) if secret else None
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
                "code_verifier": code_verifier, "client_id": self.settings.oidc_client_id}
        try:
            async with httpx.AsyncClient(timeout=10, transport=self.discovery.transport, auth=auth) as client:
                response = await client.post(meta.token_endpoint, data=form, headers={"Accept": "application/json"})
            body: dict[str, Any] = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise OidcError(f"code exchange failed: {exc}") from None
        if response.status_code != 200:
            raise OidcError(f"code exchange refused ({response.status_code}): {body.get('error')}")
        access, id_token = body.get("access_token"), body.get("id_token")
        if not isinstance(access, str) or not isinstance(id_token, str):
            raise OidcError("the token response lacks an access token or an ID token")
        return TokenSet(access, id_token)

    async def logout_url(self, id_token: str, post_logout_redirect_uri: str) -> str | None:
        """RP-initiated logout at the provider, or None when it has no `end_session_endpoint`."""
        meta = await self.discovery.metadata()
        if not meta.end_session_endpoint:
            return None
        query = urlencode({"id_token_hint": id_token, "post_logout_redirect_uri": post_logout_redirect_uri,
                           "client_id": self.settings.oidc_client_id})
        sep = "&" if "?" in meta.end_session_endpoint else "?"
        return f"{meta.end_session_endpoint}{sep}{query}"
