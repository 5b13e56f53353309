"""Aggregator settings (environment, prefix `KP_`)."""

from __future__ import annotations

from shared.settings import KPSettings


class AggregatorSettings(KPSettings):
    port: int = 8002
    consumer_group: str = "kp-aggregator"
    max_batch_records: int = 2000
    batch_timeout_ms: int = 200
