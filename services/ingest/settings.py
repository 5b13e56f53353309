"""Ingest settings (environment, prefix `KP_`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import model_validator

from shared.kafka import USAGE_EVENTS, USAGE_REJECTED
from shared.settings import KPSettings

MAPPINGS_DIR = Path(__file__).resolve().parent / "mappings"


class IngestSettings(KPSettings):
    port: int = 8001
    max_batch_events: int = 1000
    max_body_bytes: int = 1024 * 1024
    """Limit for the body as sent and, separately, after gzip decompression."""
    produce_timeout_s: float = 10.0
    """Longest wait for Kafka's acknowledgement before answering 503."""
    retry_after_s: int = 5
    ingest_auth_required: bool = True
    """Require an API key (`KP_INGEST_AUTH_REQUIRED`); only `dev`/`test` may switch it off."""
    api_key_cache_s: float = 10.0
    """How long a looked-up key is trusted before PostgreSQL is asked again (a revocation takes this long)."""
    clock_skew_s: int = 300
    """Events up to this far in the future are accepted (platform clocks drift)."""
    mappings_dir: Path = MAPPINGS_DIR
    usage_topic: str = USAGE_EVENTS.name
    rejected_topic: str = USAGE_REJECTED.name
    tracker_client_rate_per_s: float = 5.0
    """Collect requests per second and client address (`POST /v1/collect`, per instance, in memory only)."""
    tracker_client_burst: int = 60
    tracker_max_body_bytes: int = 16 * 1024
    site_token_cache_s: float = 10.0
    """How long a site token (found or unknown) is trusted before PostgreSQL is asked again."""

    @model_validator(mode="after")
    def _keys_required_in_production(self) -> IngestSettings:
        if self.environment == "production" and not self.ingest_auth_required:
            raise ValueError("KP_INGEST_AUTH_REQUIRED=false is only allowed in dev and test")
        return self
