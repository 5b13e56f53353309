"""Reference data of Digitale Kommune@Hessen: municipalities (AGS/ARS) and OZG services (LeiKa keys).

Copied from verified tables with their sources (see SOURCES.md and the `source` column). Keys are never
invented: an empty field means the value was not verified.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from importlib import resources


@dataclass(frozen=True, slots=True)
class Municipality:
    name: str
    ags: str
    ars: str
    kreis: str
    population: int
    population_date: str
    political_geocoding_uri: str
    source: str


@dataclass(frozen=True, slots=True)
class Service:
    leika_key: str
    name_de: str
    ozg_leistung: str | None
    typ: str | None
    source: str


def _rows(name: str) -> list[dict[str, str]]:
    text = resources.files(__package__).joinpath(name).read_text(encoding="utf-8")
    return list(csv.DictReader(text.splitlines()))


@cache
def municipalities() -> tuple[Municipality, ...]:
    """The six member cities, in the order of the reference table."""
    return tuple(
        Municipality(
            name=r["name"], ags=r["ags"], ars=r["ars"], kreis=r["kreis"], population=int(r["population"]),
            population_date=r["population_date"], political_geocoding_uri=r["political_geocoding_uri"],
            source=r["source"],
        )
        for r in _rows("municipalities.csv")
    )


@cache
def services() -> tuple[Service, ...]:
    """The OZG services with verified LeiKa keys."""
    return tuple(
        Service(
            leika_key=r["leika_key"], name_de=r["name_de"], ozg_leistung=r["ozg_leistung"] or None,
            typ=r["typ"] or None, source=r["source"],
        )
        for r in _rows("services.csv")
    )


@cache
def municipality_by_ags() -> dict[str, Municipality]:
    return {m.ags: m for m in municipalities()}


@cache
def service_by_key() -> dict[str, Service]:
    return {s.leika_key: s for s in services()}


# --- membership -------------------------------------------------------------------------------------------------
# Which municipalities and services the event contracts accept: the reference tables by default; a service adds
# the extra keys of its settings (`KP_EXTRA_MUNICIPALITIES`, `KP_EXTRA_SERVICES`) once at start, before it
# reads any event (docs/adr/0020-reference-data-policy.md).

_extra_members: frozenset[str] = frozenset()
_extra_services: frozenset[str] = frozenset()


def configure_members(municipalities: Iterable[str] = (), services: Iterable[str] = ()) -> None:
    """Accept these AGS and LeiKa keys besides the reference tables (replacing earlier extra keys)."""
    global _extra_members, _extra_services
    _extra_members, _extra_services = frozenset(municipalities), frozenset(services)
    member_municipalities.cache_clear()
    known_services.cache_clear()


def extra_members() -> tuple[frozenset[str], frozenset[str]]:
    """The configured extra (municipalities, services)."""
    return _extra_members, _extra_services


@cache
def member_municipalities() -> frozenset[str]:
    """AGS the contracts accept: the reference table plus the configured extra members."""
    return frozenset(municipality_by_ags()) | _extra_members


@cache
def known_services() -> frozenset[str]:
    """LeiKa keys the contracts accept: the reference table plus the configured extra services."""
    return frozenset(service_by_key()) | _extra_services


def is_member(ags: str) -> bool:
    return ags in member_municipalities()


def is_known_service(leika_key: str) -> bool:
    return leika_key in known_services()
