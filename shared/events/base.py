"""Envelope fields and constrained types shared by every event contract."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints
from pydantic_core import PydanticCustomError

from shared.events.text import Text
from shared.reference import is_known_service, is_member


def _member(ags: str) -> str:
    if not is_member(ags):
        raise PydanticCustomError(
            "unknown_municipality",
            "municipality {ags} is not a member (reference table or KP_EXTRA_MUNICIPALITIES)", {"ags": ags},
        )
    return ags


AGS = Annotated[str, StringConstraints(pattern=r"^\d{8}$", strict=True), AfterValidator(_member)]
"""Amtlicher Gemeindeschlüssel of a member municipality: 8 digits, kept as a string (leading zero)."""

def _known_service(key: str) -> str:
    if not is_known_service(key):
        raise PydanticCustomError(
            "unknown_service", "service {key} is not in the reference data (or KP_EXTRA_SERVICES)", {"key": key},
        )
    return key


LeiKaKey = Annotated[str, StringConstraints(pattern=r"^\d{14}$", strict=True), AfterValidator(_known_service)]
"""Leistungsschlüssel of the LeiKa catalogue of a known service: 14 digits."""

Source = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$", strict=True)]
"""Identifier of the emitting platform, e.g. `civento-offenbach`."""

Pseudonym = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{8,64}$", strict=True)]
"""Opaque identifier chosen by the platform; never derived from a person."""

ShortText = Annotated[str, Text(120, min_chars=1)]
"""A one-line text: 1-120 characters, at most 240 UTF-8 bytes, no control characters."""


class Contract(BaseModel):
    """Base for every contract model: closed, immutable, strictly typed."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)


class Envelope(Contract):
    """Fields every event carries (CloudEvents-compatible names where they fit)."""

    id: UUID = Field(description="Client-chosen event id; the idempotency key.")
    schema_version: Annotated[int, Field(ge=1, le=1, strict=True)] = 1
    source: Source
    time: AwareDatetime = Field(description="When it happened, RFC 3339 with offset.")
    municipality: AGS
    service: LeiKaKey

    @property
    def kafka_key(self) -> bytes:
        """Partition key: keeps one municipality's service stream (and so each session) ordered."""
        return f"{self.municipality}:{self.service}".encode()
