"""Workflow settings (environment, prefix `KP_`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, model_validator

from services.workflow.definitions import DEFINITIONS_DIR
from shared.kafka import APPLICATION_EVENTS, APPLICATION_REJECTED, WORKFLOW_EVENTS, WORKFLOW_REJECTED
from shared.rejections import DEFAULT_MAX_RECORD_BYTES
from shared.settings import KPSettings


class CallbackPlatform(BaseModel):
    """Credentials of one platform posting FIT-Connect-style callbacks (HTTP Basic, secret stored as SHA-256)."""

    secret_sha256: str
    municipalities: list[str]
    service: str | None = None


class WorkflowSettings(KPSettings):
    port: int = 8004
    consumer_group: str = "kp-workflow"
    application_topic: str = APPLICATION_EVENTS.name
    workflow_topic: str = WORKFLOW_EVENTS.name
    application_rejected_topic: str = APPLICATION_REJECTED.name
    workflow_rejected_topic: str = WORKFLOW_REJECTED.name
    """Where the outbox relay reports a workflow event it can never send (e.g. larger than the broker accepts)."""
    rejected_max_bytes: int = DEFAULT_MAX_RECORD_BYTES
    """Upper bound of a rejected record and of an event the relay sends (the broker's `message.max.bytes`)."""
    relay_interval_s: float = 0.2
    relay_batch: int = 500
    relay_in_process: bool = True
    batch_max_records: int = 500
    batch_timeout_ms: int = 20
    lanes: int = 4
    lane_concurrency: int = 16
    definitions_dir: Path = DEFINITIONS_DIR

    timer_interval_s: float = 0.5
    timer_batch: int = 100
    metrics_interval_s: float = 5.0
    retry_jitter: float = 0.5

    eakte: Literal["filesystem", "http"] = "filesystem"
    eakte_root: Path = Path(".run/eakte")
    eakte_url: str | None = None
    eakte_token: str | None = None

    # OIDC: bearer JWTs signed by the issuer; keys from a JWKS URL, a file, or inline JSON (dev/test).
    oidc_issuer: str | None = None
    oidc_audience: str = "kommunal-pulse-workflow"
    oidc_jwks_url: str | None = None
    oidc_jwks_file: Path | None = None
    oidc_jwks_json: str | None = None
    oidc_roles_claim: str = "roles"
    oidc_municipalities_claim: str = "municipalities"
    oidc_algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256"])

    # Clerk view sign-in: Authorization Code + PKCE against the issuer found by discovery
    # (`{KP_OIDC_ISSUER}/.well-known/openid-configuration`), server-side sessions in PostgreSQL.
    oidc_client_id: str = "kommunal-pulse-workflow"
    oidc_client_secret: SecretStr | None = None
    oidc_scopes: str = "openid profile"
    public_url: str | None = None
    """External base URL of this service (the redirect URI is `{public_url}/sachbearbeitung/anmeldung`);
    unset only in dev and test, where the request's own URL is used."""
    session_max_age_s: int = Field(8 * 3600, ge=60)
    session_idle_s: int = Field(30 * 60, ge=60)
    session_cookie_secure: bool | None = None
    """Secure cookie flag; unset: on in production, off in dev and test (plain HTTP on loopback)."""

    callback_platforms: dict[str, CallbackPlatform] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _production_needs_real_config(self) -> WorkflowSettings:
        if self.environment == "production":
            if not self.oidc_issuer:
                raise ValueError("KP_OIDC_ISSUER must be set in production (keys come from its discovery "
                                 "document or KP_OIDC_JWKS_URL)")
            if self.oidc_jwks_file or self.oidc_jwks_json:
                raise ValueError("inline or file JWKS are for dev and test only")
            if not self.public_url or not self.public_url.startswith("https://"):
                raise ValueError("KP_PUBLIC_URL must be the service's https:// address in production")
            secret = self.oidc_client_secret.get_secret_value() if self.oidc_client_secret else ""
            if secret.startswith("dev-only"):
                raise ValueError("KP_OIDC_CLIENT_SECRET is the local demo realm's secret; use the IdP's own")
            if self.session_cookie_secure is False:
                raise ValueError("KP_SESSION_COOKIE_SECURE=false is for dev and test only")
        if self.eakte == "http" and not self.eakte_url:
            raise ValueError("KP_EAKTE_URL is required when KP_EAKTE=http")
        return self

    @property
    def cookie_secure(self) -> bool:
        return self.session_cookie_secure if self.session_cookie_secure is not None else (
            self.environment == "production")
