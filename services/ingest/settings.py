"""Ingest settings (environment, prefix `KP_`)."""

from __future__ import annotations

from shared.settings import KPSettings


class IngestSettings(KPSettings):
    port: int = 8001
    max_batch_events: int = 1000
    max_body_bytes: int = 1024 * 1024
    produce_timeout_s: float = 10.0
