"""Aggregator settings (environment, prefix `KP_`)."""

from __future__ import annotations

from typing import Final

from pydantic import SecretStr, model_validator

from shared.kafka import USAGE_EVENTS, USAGE_REJECTED, WORKFLOW_EVENTS, WORKFLOW_REJECTED
from shared.rejections import DEFAULT_MAX_RECORD_BYTES
from shared.settings import KPSettings

DEV_CKM_SECRET: Final = "dev-only-ckm-secret-change-me"


class AggregatorSettings(KPSettings):
    port: int = 8002
    consumer_group: str = "kp-aggregator"
    workflow_consumer_group: str = "kp-aggregator-workflow"
    usage_topic: str = USAGE_EVENTS.name
    workflow_topic: str = WORKFLOW_EVENTS.name
    rejected_topic: str = USAGE_REJECTED.name
    workflow_rejected_topic: str = WORKFLOW_REJECTED.name
    rejected_max_bytes: int = DEFAULT_MAX_RECORD_BYTES
    """Upper bound of a rejected record (the broker's `message.max.bytes`, minus room for the record overhead)."""
    consume_workflow: bool = True
    max_batch_records: int = 20_000
    """Upper bound per batch (= per transaction); under backlog bigger batches fold more events per KPI row."""
    max_partition_fetch_bytes: int = 4 * 1024 * 1024
    fold_chunk_records: int = 4000
    """A batch is folded and written in chunks of this size, folding the next while the last is written."""
    batch_timeout_ms: int = 200
    future_skew_s: int = 900
    """Events whose `time` lies further ahead than this are rejected as `from_future` (platform clock wrong)."""
    dedup_margin_days: int = 1
    """Event ids are kept for `late_horizon_days + dedup_margin_days` after their event time."""
    dedup_cleanup_interval_s: float = 600.0
    dedup_cleanup_chunk: int = 50_000
    retry_backoff_max_s: float = 5.0
    lag_refresh_interval_s: float = 5.0
    ckm_secret: SecretStr = SecretStr(DEV_CKM_SECRET)
    """Key of the Cell Key Method's record keys (keyed BLAKE2b of each event id); see docs/privacy.md before
    rotating it."""

    @model_validator(mode="after")
    def _no_dev_ckm_secret_in_production(self) -> AggregatorSettings:
        secret = self.ckm_secret.get_secret_value()
        if self.environment == "production" and (secret == DEV_CKM_SECRET or len(secret) < 32):
            raise ValueError("KP_CKM_SECRET must be set to a random value of at least 32 characters in production")
        return self

    def ckm_key(self) -> bytes:
        """The record-key secret as bytes."""
        return self.ckm_secret.get_secret_value().encode()
