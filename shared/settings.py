"""Settings base shared by every service: environment variables with the `KP_` prefix, nothing else."""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class KPSettings(BaseSettings):
    """Connection and runtime settings common to all services."""

    model_config = SettingsConfigDict(env_prefix="KP_", extra="ignore")

    environment: Literal["dev", "test", "production"] = "dev"
    kafka_bootstrap: str = "127.0.0.1:9092"
    database_url: str = "postgresql://kp@127.0.0.1:5432/kommunal_pulse"
    db_pool_min: int = 1
    db_pool_max: int = 10
    log_level: str = "INFO"
    log_json: bool = True
    host: str = "127.0.0.1"
    port: int = 8000
    late_horizon_days: int = 7
    """Events older than this (by their `time`) are rejected as `too_late` by ingest and the aggregator."""

    @model_validator(mode="after")
    def _no_dev_defaults_in_production(self) -> KPSettings:
        if self.environment == "production" and "kp@127.0.0.1" in self.database_url:
            raise ValueError("KP_DATABASE_URL must be set explicitly in production")
        return self
