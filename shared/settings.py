"""Settings base shared by every service: environment variables with the `KP_` prefix, nothing else."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared.reference import configure_members

if TYPE_CHECKING:
    from faststream.security import BaseSecurity


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
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = "SCRAM-SHA-512"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    """Kafka client authentication (e.g. Strimzi KafkaUser with SCRAM-SHA-512); PLAINTEXT for local stacks."""
    late_horizon_days: int = 7
    """Events older than this (by their `time`) are rejected as `too_late` by ingest and the aggregator."""
    extra_municipalities: Annotated[tuple[str, ...], NoDecode] = ()
    """AGS of member cities not yet in the reference table, comma-separated (`KP_EXTRA_MUNICIPALITIES`); their
    events are accepted like those of the reference table (docs/adr/0020-reference-data-policy.md)."""
    extra_services: Annotated[tuple[str, ...], NoDecode] = ()
    """LeiKa keys of services not yet in the reference table, comma-separated (`KP_EXTRA_SERVICES`)."""

    @field_validator("extra_municipalities", "extra_services", mode="before")
    @classmethod
    def _split_keys(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, str):
            value = tuple(part.strip() for part in value.split(",") if part.strip())
        digits, what = (8, "AGS") if info.field_name == "extra_municipalities" else (14, "LeiKa key")
        for key in value:
            if not isinstance(key, str) or not re.fullmatch(rf"\d{{{digits}}}", key):
                raise ValueError(f"KP_{str(info.field_name).upper()}: {key!r} is not a {digits}-digit {what}")
        return value

    def configure_reference(self) -> None:
        """Make the event contracts of this process accept the configured extra municipalities and services."""
        configure_members(self.extra_municipalities, self.extra_services)

    @model_validator(mode="after")
    def _no_dev_defaults_in_production(self) -> KPSettings:
        if self.environment == "production" and "kp@127.0.0.1" in self.database_url:
            raise ValueError("KP_DATABASE_URL must be set explicitly in production")
        if self.kafka_security_protocol.startswith("SASL") and not (
            self.kafka_sasl_username and self.kafka_sasl_password
        ):
            raise ValueError("KP_KAFKA_SASL_USERNAME and KP_KAFKA_SASL_PASSWORD are required with SASL")
        return self

    @property
    def kafka_servers(self) -> list[str]:
        """`kafka_bootstrap` as a list of `host:port` (it may name several brokers, comma-separated; FastStream
        takes a single string for one host)."""
        return [s.strip() for s in self.kafka_bootstrap.split(",") if s.strip()]

    def kafka_client_options(self) -> dict[str, object]:
        """Connection options for aiokafka clients (producer, consumer, admin)."""
        options: dict[str, object] = {"bootstrap_servers": self.kafka_bootstrap,
                                      "security_protocol": self.kafka_security_protocol}
        if self.kafka_security_protocol.endswith("SSL"):
            import ssl

            options["ssl_context"] = ssl.create_default_context()
        if self.kafka_security_protocol.startswith("SASL"):
            assert self.kafka_sasl_password is not None
            options.update(sasl_mechanism=self.kafka_sasl_mechanism, sasl_plain_username=self.kafka_sasl_username,
                           sasl_plain_password=self.kafka_sasl_password.get_secret_value())
        return options

    def faststream_security(self) -> BaseSecurity | None:
        """The same authentication as a FastStream security object (None for PLAINTEXT)."""
        from faststream.security import SASLPlaintext, SASLScram256, SASLScram512

        if not self.kafka_security_protocol.startswith("SASL"):
            return None
        assert self.kafka_sasl_username is not None
        assert self.kafka_sasl_password is not None
        use_ssl = self.kafka_security_protocol == "SASL_SSL"
        kind = {"SCRAM-SHA-512": SASLScram512, "SCRAM-SHA-256": SASLScram256, "PLAIN": SASLPlaintext}
        return kind[self.kafka_sasl_mechanism](
            self.kafka_sasl_username, self.kafka_sasl_password.get_secret_value(), use_ssl=use_ssl
        )
