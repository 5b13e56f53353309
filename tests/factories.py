"""Builders of valid events for tests (random ids; municipalities and services from the reference data)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from shared.events.upcast import CURRENT_VERSIONS

OFFENBACH = "06413000"
MARBURG = "06534014"
WOHNSITZ_ANMELDUNG = "99115005104000"


def usage_event(
    kind: str = "usage.session.started", *, municipality: str = OFFENBACH, service: str = WOHNSITZ_ANMELDUNG,
    time: datetime | None = None, session: str | None = None, data: dict[str, Any] | None = None,
    source: str = "test-platform", event_id: str | None = None, schema_version: int | Literal["omit"] | None = None,
) -> dict[str, Any]:
    """A valid event of the type's current schema version (written out only for types with several), or of
    `schema_version`; `"omit"` leaves the field out (which means version 1)."""
    if schema_version is None:
        schema_version = CURRENT_VERSIONS.get(kind, "omit")
    defaults: dict[str, dict[str, Any]] = {
        "usage.page.viewed": {"page": "/start", "device": "desktop", "referrer": "search"},
        "usage.session.started": {"channel": "web", "device": "mobile"},
        "usage.step.completed": {"step": 1, "step_name": "Start"},
        "usage.auth.completed": {"method": "bundid_basis", "level": "substantiell"},
        "usage.payment.completed": {"method": "paypal", "amount_cents": 1200},
        "usage.session.submitted": {"duration_s": 300},
        "usage.session.abandoned": {"last_step": 2},
        "usage.feedback.given": {"stars": 4},
    }
    return {
        "id": event_id or str(uuid.uuid4()),
        "type": kind,
        **({"schema_version": schema_version} if schema_version != "omit" else {}),
        "source": source,
        "time": (time or datetime.now(UTC)).isoformat(),
        "municipality": municipality,
        "service": service,
        "session": session or f"sess{uuid.uuid4().hex[:16]}",
        "data": data if data is not None else defaults[kind],
    }


def application_submitted(
    application_id: str | None = None, *, municipality: str = OFFENBACH, service: str = WOHNSITZ_ANMELDUNG,
    documents: list[str] | None = None, event_id: str | None = None,
) -> dict[str, Any]:
    return {
        "id": event_id or str(uuid.uuid4()),
        "type": "application.submitted",
        "source": "test-portal",
        "time": datetime.now(UTC).isoformat(),
        "municipality": municipality,
        "service": service,
        "application_id": application_id or f"APP-{uuid.uuid4().hex[:12]}",
        "data": {"channel": "online", "documents": documents or []},
    }


def portal_dataset(name: str | None = None, *, municipality: str = OFFENBACH, **overrides: Any) -> dict[str, Any]:
    """A valid DCAT-AP.de description of a registered (non-KPI) dataset for the data portal."""
    doc: dict[str, Any] = {
        "name": name or f"ds-{uuid.uuid4().hex[:12]}",
        "municipality": municipality,
        "title": "Parkplätze in der Innenstadt",
        "description": "Lage und Kapazität der öffentlichen Parkplätze und Parkhäuser in der Innenstadt.",
        "keywords": ["Parken", "Verkehr"],
        "themes": ["http://publications.europa.eu/resource/authority/data-theme/TRAN"],
        "licence": "http://dcat-ap.de/def/licenses/dl-by-de/2.0",
        "contact_point": {"name": "Open-Data-Team", "email": "opendata@example.org"},
        "temporal": {"start": "2024-01-01", "end": "2024-12-31"},
        "frequency": "http://publications.europa.eu/resource/authority/frequency/MONTHLY",
        "distributions": [{"title": "Parkplätze (JSON)", "access_url": "https://example.org/parken.json",
                           "format": "JSON"}],
    }
    doc.update(overrides)
    return doc
