"""Upcasters: bring an event of an older schema version to the current one before model validation.

Published schemas never change in place; a new version of an event type comes with one upcaster per
(type, from_version) that turns the raw JSON object of that version into the next. Consumers then validate
against the current models only. Types without a registered newer version pass through unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar

import orjson
from pydantic import TypeAdapter, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

RawEvent = Mapping[str, Any]
"""An event as parsed from JSON, before validation."""

Upcaster = Callable[[RawEvent], dict[str, Any]]
"""Turns a raw event of version n into the raw event of version n + 1 (everything but `data` is kept)."""

T = TypeVar("T")

CURRENT_VERSIONS: Final[dict[str, int]] = {"usage.page.viewed": 2}
"""The current schema version of every type that has more than one; all other types are at version 1."""

DEFAULT_VERSION: Final = 1
"""What a missing `schema_version` means: version 1 had it optional with this default."""


def _error(event: RawEvent, loc: tuple[str, ...], code: str, message: str, ctx: dict[str, Any],
           value: object) -> ValidationError:
    return ValidationError.from_exception_data(str(event.get("type")), [InitErrorDetails(
        type=PydanticCustomError(code, message, ctx), loc=loc, input=value)])


PAGE_VIEWED_V1_REFERRERS: Final = ("search", "portal", "direct", "other")


def _page_viewed_1_to_2(event: RawEvent) -> dict[str, Any]:
    # v1's `portal` (the service's own site or another public-administration site, not told apart) keeps its
    # name in v2; search, direct and other mean the same. A v1 `other` may hide a social network: v1 never
    # knew that class, so it cannot be recovered.
    data = event.get("data")
    if isinstance(data, Mapping) and "referrer" in data and data["referrer"] not in PAGE_VIEWED_V1_REFERRERS:
        raise _error(event, ("data", "referrer"), "v1_referrer",
                     "schema version 1 has the referrer classes {allowed}; send version 2 for the others",
                     {"allowed": ", ".join(PAGE_VIEWED_V1_REFERRERS)}, data["referrer"])
    return {**event, "schema_version": 2}


UPCASTERS: Final[dict[tuple[str, int], Upcaster]] = {
    ("usage.page.viewed", 1): _page_viewed_1_to_2,
}
"""One upcaster per (type, from_version)."""


def _refuse(event: RawEvent, version: object, current: int) -> ValidationError:
    return _error(event, ("schema_version",), "unknown_schema_version",
                  "{type} has no schema version {version}; known versions are 1 to {current}",
                  {"type": str(event.get("type")), "version": repr(version), "current": current}, version)


def upcast(event: RawEvent) -> RawEvent:
    """The event at its type's current version: itself when it is current or its type has only version 1,
    else the result of the upcaster chain. Raises `ValidationError` (`unknown_schema_version`) for a version
    the type never had."""
    kind = event.get("type")
    current = CURRENT_VERSIONS.get(kind) if isinstance(kind, str) else None
    if current is None:
        return event  # single-version types: the envelope itself checks `schema_version`
    version = event.get("schema_version", DEFAULT_VERSION)
    if version == current and type(version) is int:
        return event
    if type(version) is not int or not DEFAULT_VERSION <= version < current:
        raise _refuse(event, version, current)
    out: RawEvent = event
    while version < current:
        out = UPCASTERS[(kind, version)](out)  # type: ignore[index]  # kind is a str when current is set
        version += 1
    return out


def needs_upcast(event: object) -> bool:
    """Whether `upcast` would change (or refuse) this raw event; cheap, for choosing a slow path."""
    if not isinstance(event, Mapping):
        return False
    kind = event.get("type")
    current = CURRENT_VERSIONS.get(kind) if isinstance(kind, str) else None
    return current is not None and event.get("schema_version", DEFAULT_VERSION) != current


def validate_python(adapter: TypeAdapter[T], event: Any) -> T:
    """Validate a parsed event against the current models after upcasting it."""
    return adapter.validate_python(upcast(event) if needs_upcast(event) else event)


def revalidate_json(adapter: TypeAdapter[T], value: bytes, first: ValidationError) -> T:
    """Second chance for JSON that failed the current models: if it is an older version of its type, upcast
    and validate it; otherwise raise `first`, the error of the current models.

    Hot paths validate the bytes directly and call this only on failure, so only old versions pay for parsing
    twice."""
    try:
        event = orjson.loads(value)
    except orjson.JSONDecodeError:
        raise first from None
    if not needs_upcast(event):
        raise first
    return adapter.validate_python(upcast(event))
