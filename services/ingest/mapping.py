"""Declarative platform mappings: a YAML file turns a platform's own payload into our event envelope.

A mapping names, for every envelope field and every `data` field of the event types it produces, where the
value comes from (`path`, dotted, list indices as numbers) or a constant (`const`), an optional value map
(`map`), a `default` when the path is missing and a conversion (`convert`). Files are validated when loaded,
against the event contracts, so a broken mapping stops the service at start instead of rejecting traffic.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shared.events.usage import (
    AuthCompleted,
    FeedbackGiven,
    PageViewed,
    PaymentCompleted,
    SessionAbandoned,
    SessionStarted,
    SessionSubmitted,
    StepCompleted,
    UsageEventBase,
)

_EVENT_CLASSES: tuple[type[UsageEventBase], ...] = (
    PageViewed, SessionStarted, StepCompleted, AuthCompleted, PaymentCompleted, SessionSubmitted, SessionAbandoned,
    FeedbackGiven,
)


def _type_of(cls: type[UsageEventBase]) -> str:
    return str(get_args(cls.model_fields["type"].annotation)[0])


DATA_MODELS: dict[str, type[BaseModel]] = {
    _type_of(c): c.model_fields["data"].annotation for c in _EVENT_CLASSES  # type: ignore[misc]
}
ENVELOPE_FIELDS = ("id", "type", "source", "time", "municipality", "service", "session")
MAPPING_NAMESPACE = uuid.UUID("9d3c4f52-6a36-5a0b-8c0e-4b9f2f1d7a21")
"""Namespace of ids derived from a platform's own ids (uuid5), so a re-sent callback keeps its event id."""

Scalar = str | int | float | bool | None
_MISSING = object()


class MappingError(Exception):
    def __init__(self, loc: list[str], msg: str) -> None:
        super().__init__(msg)
        self.loc = loc
        self.msg = msg


class FieldSpec(BaseModel):
    """Where one target field comes from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str | None = Field(default=None, description="Dotted path into the platform payload.")
    const: Scalar = None
    map: dict[str, Scalar] | None = Field(default=None, description="Value map, looked up by str(value).")
    default: Scalar = Field(default=None, description="Used when the path is missing or the map has no entry.")
    convert: Literal["uuid5", "epoch_ms", "epoch_s", "int", "str"] | None = None

    @model_validator(mode="after")
    def _one_source(self) -> FieldSpec:
        has_const = "const" in self.model_fields_set
        if (self.path is None) == (not has_const):
            raise ValueError("give exactly one of `path` or `const`")
        return self

    def resolve(self, payload: Any, platform: str, target: str) -> Any:
        if "const" in self.model_fields_set:
            return self.const
        assert self.path is not None
        value = _get(payload, self.path)
        if value is _MISSING or value is None:
            if "default" in self.model_fields_set:
                return self.default
            raise MappingError([target], f"path {self.path!r} is missing in the payload")
        if self.map is not None:
            key = str(value).lower() if isinstance(value, bool) else str(value)
            if key in self.map:
                value = self.map[key]
            elif "default" in self.model_fields_set:
                return self.default
            else:
                raise MappingError([target], f"value {str(value)[:80]!r} at {self.path!r} has no entry in the map")
        return _convert(value, self.convert, platform, target)


def _get(payload: Any, path: str) -> Any:
    node = payload
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
    return node


def _convert(value: Any, how: str | None, platform: str, target: str) -> Any:
    try:
        if how is None:
            return value
        if how == "uuid5":
            return str(uuid.uuid5(MAPPING_NAMESPACE, f"{platform}:{value}"))
        if how in ("epoch_ms", "epoch_s"):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError("not a number")
            seconds = value / 1000 if how == "epoch_ms" else value
            return datetime.fromtimestamp(seconds, UTC).isoformat()
        if how == "int":
            if isinstance(value, bool):
                raise ValueError("not a number")
            if isinstance(value, float) and not value.is_integer():
                raise ValueError("not a whole number")
            return int(value)
        return str(value)
    except (ValueError, TypeError, OverflowError, OSError) as exc:
        raise MappingError([target], f"cannot convert {str(value)[:80]!r} with {how}: {exc}") from exc


class PlatformMapping(BaseModel):
    """One platform's mapping onto the usage-event envelope."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    platform: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")
    description: str = ""
    envelope: dict[str, FieldSpec]
    data: dict[str, dict[str, FieldSpec]]

    @model_validator(mode="after")
    def _complete(self) -> PlatformMapping:
        missing = [f for f in ENVELOPE_FIELDS if f not in self.envelope]
        unknown = [f for f in self.envelope if f not in ENVELOPE_FIELDS]
        if missing or unknown:
            raise ValueError(f"envelope fields missing: {missing}, unknown: {unknown}")
        type_spec = self.envelope["type"]
        produced = set(self.produced_types())
        if not produced:
            raise ValueError("`envelope.type` must be a `const` or have a `map` naming event types")
        bad_types = sorted(t for t in produced | set(self.data) if t not in DATA_MODELS)
        if bad_types:
            raise ValueError(f"unknown event types: {bad_types}; known: {sorted(DATA_MODELS)}")
        if type_spec.convert is not None:
            raise ValueError("`envelope.type` takes no conversion")
        for event_type in produced:
            model = DATA_MODELS[event_type]
            fields = self.data.get(event_type)
            if fields is None:
                raise ValueError(f"no `data` mapping for produced event type {event_type}")
            unknown_data = [f for f in fields if f not in model.model_fields]
            required = [n for n, f in model.model_fields.items() if f.is_required() and n not in fields]
            if unknown_data or required:
                raise ValueError(f"data of {event_type}: unknown fields {unknown_data}, unmapped required {required}")
        return self

    def produced_types(self) -> list[str]:
        spec = self.envelope["type"]
        if "const" in spec.model_fields_set:
            return [str(spec.const)]
        values = list((spec.map or {}).values())
        if "default" in spec.model_fields_set and spec.default is not None:
            values.append(spec.default)
        return [str(v) for v in values]

    def apply(self, payload: Any) -> dict[str, Any]:
        """Build the envelope dict (validated afterwards like any event); raise MappingError if impossible."""
        if not isinstance(payload, dict):
            raise MappingError([], "each callback must be a JSON object")
        envelope = {name: spec.resolve(payload, self.platform, name) for name, spec in self.envelope.items()}
        event_type = envelope["type"]
        data_specs = self.data.get(str(event_type), {})
        data: dict[str, Any] = {}
        for name, spec in data_specs.items():
            value = spec.resolve(payload, self.platform, f"data.{name}")
            if value is not None or "default" not in spec.model_fields_set:
                data[name] = value
        envelope["data"] = data
        return envelope


def load_mapping(path: Path) -> PlatformMapping:
    """Read and validate one mapping file; raise ValueError naming the file on any problem."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        return PlatformMapping.model_validate(raw)
    except (yaml.YAMLError, ValidationError) as exc:
        raise ValueError(f"invalid platform mapping {path.name}: {exc}") from exc


def load_mappings(directory: Path) -> dict[str, PlatformMapping]:
    """All `*.yaml` mappings of a folder, by platform name (unique)."""
    mappings: dict[str, PlatformMapping] = {}
    for path in sorted(directory.glob("*.yaml")):
        mapping = load_mapping(path)
        if mapping.platform in mappings:
            raise ValueError(f"platform {mapping.platform!r} is mapped twice ({path.name})")
        mappings[mapping.platform] = mapping
    return mappings
