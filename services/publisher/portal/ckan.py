"""CKAN-compatible read API (Action API v3): parameters, package dictionaries and the response envelope.

Follows the documented shapes of CKAN 2.10 (`ckan.logic.action.get`): every answer is
`{"help": ..., "success": true, "result": ...}`, failures `{"success": false, "error": {"__type": ...}}`.
Organisations are the municipalities; groups are the EU data themes (lower-case codes, as on GovData).
"""

from __future__ import annotations

import re
import shlex
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from services.publisher.portal import repository, service, vocab
from services.publisher.portal.repository import SearchQuery
from services.publisher.portal.schemas import Dataset, FacetItem
from shared.db import Conn
from shared.reference import Municipality, municipalities, municipality_by_ags

DEFAULT_FACETS = ("organization", "groups", "tags", "res_format", "license_id")
MAX_ROWS = 1000
_FACET_OF = {"organization": "municipality", "groups": "theme", "tags": "keyword", "res_format": "format",
             "license_id": "licence"}


@dataclass
class CkanError(Exception):
    """A failure in CKAN's terms: HTTP status, `__type` and the message or field errors."""

    status: int
    kind: str
    message: str | None = None
    fields: dict[str, list[str]] | None = None

    def error(self) -> dict[str, Any]:
        out: dict[str, Any] = {"__type": self.kind}
        if self.message is not None:
            out["message"] = self.message
        if self.fields:
            out.update(self.fields)
        return out


def not_found(what: str = "Not found") -> CkanError:
    return CkanError(404, "Not Found Error", what)


def validation(**fields: str) -> CkanError:
    return CkanError(409, "Validation Error", fields={k: [v] for k, v in fields.items()})


def envelope(help_url: str, result: Any) -> dict[str, Any]:
    return {"help": help_url, "success": True, "result": result}


def error_envelope(help_url: str, err: CkanError) -> dict[str, Any]:
    return {"help": help_url, "success": False, "error": err.error()}


# --- vocabulary mapping ---------------------------------------------------------------------------------------


def org_name(m: Municipality) -> str:
    """CKAN name of a municipality's organisation, e.g. `giessen`, `limburg-a-d-lahn`."""
    s = m.name.lower()
    for a, b in (("ä", "ae"), ("ö", "oe"), ("ü", "ue"), ("ß", "ss")):
        s = s.replace(a, b)
    return re.sub(r"[^a-z0-9]+", "-", s).strip("-")


def _org_by_name() -> dict[str, Municipality]:
    return {org_name(m): m for m in municipalities()}


def theme_code(iri: str) -> str:
    return iri.rsplit("/", 1)[-1].lower()


def _ckan_time(t: datetime) -> str:
    # CKAN reports naive UTC timestamps with microseconds
    return (t.astimezone(UTC) if t.tzinfo else t).replace(tzinfo=None).isoformat(timespec="microseconds")


def organization(m: Municipality, package_count: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": m.ags, "name": org_name(m), "title": m.name, "display_name": m.name, "type": "organization",
        "is_organization": True, "state": "active", "approval_status": "approved", "image_url": "",
        "description": f"Offene Daten der Kommune {m.name} (AGS {m.ags}, {m.kreis})",
    }
    if package_count is not None:
        out["package_count"] = package_count
    return out


def package(d: Dataset) -> dict[str, Any]:
    """A registered dataset as a CKAN package dictionary (extras as ckanext-dcat names them)."""
    m = municipality_by_ags()[d.municipality]
    licence_title = vocab.LICENCES.get(d.licence, d.licence)
    extras = [
        {"key": "spatial_uri", "value": d.spatial},
        {"key": "frequency", "value": d.frequency},
        {"key": "theme", "value": ",".join(d.themes)},
        {"key": "publisher_name", "value": d.publisher.name},
        {"key": "contact_name", "value": d.contact_point.name},
    ]
    if d.contact_point.email:
        extras.append({"key": "contact_email", "value": d.contact_point.email})
    if d.temporal:
        extras.append({"key": "temporal_start", "value": d.temporal.start.isoformat()})
        if d.temporal.end:
            extras.append({"key": "temporal_end", "value": d.temporal.end.isoformat()})
    resources = [
        {
            "id": r.id, "package_id": d.id, "position": i, "name": r.title or f"{d.title} ({r.format})",
            "description": r.description or "", "url": r.download_url or r.access_url,
            "format": vocab.format_label(r.format), "mimetype": r.media_type, "state": "active",
            "url_type": "upload" if r.file else None, "size": r.file.byte_size if r.file else None,
            "hash": f"sha256:{r.file.sha256}" if r.file else "", "license": r.licence,
            "created": _ckan_time(d.created), "last_modified": _ckan_time(d.modified),
        }
        for i, r in enumerate(d.distributions)
    ]
    return {
        "id": d.id, "name": d.name, "title": d.title, "notes": d.description, "type": "dataset", "state": "active",
        "private": False, "url": d.landing_page or "", "version": str(d.version),
        "license_id": d.licence, "license_title": licence_title, "license_url": d.licence, "isopen": True,
        "author": d.publisher.name, "author_email": None,
        "maintainer": d.contact_point.name, "maintainer_email": d.contact_point.email,
        "metadata_created": _ckan_time(d.created), "metadata_modified": _ckan_time(d.modified),
        "owner_org": m.ags, "organization": organization(m),
        "tags": [{"name": k, "display_name": k, "state": "active", "vocabulary_id": None} for k in d.keywords],
        "num_tags": len(d.keywords),
        "groups": [
            {"name": theme_code(t), "title": vocab.THEMES.get(t, t), "display_name": vocab.THEMES.get(t, t)}
            for t in d.themes
        ],
        "resources": resources, "num_resources": len(resources), "extras": extras,
        "relationships_as_object": [], "relationships_as_subject": [],
    }


# --- package_search -------------------------------------------------------------------------------------------


def _int(params: dict[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    raw = params.get(name, default)
    try:
        value = int(raw)
    except (TypeError, ValueError) as exc:
        raise validation(**{name: "Invalid integer"}) from exc
    if not lo <= value <= hi:
        raise validation(**{name: f"Must be between {lo} and {hi}"})
    return value


def _list(raw: Any, name: str) -> list[str]:
    if raw is None:
        return list(DEFAULT_FACETS)
    if isinstance(raw, list):
        return [str(x) for x in raw]
    try:
        value = orjson.loads(str(raw))
    except orjson.JSONDecodeError as exc:
        raise validation(**{name: "Must be a JSON list"}) from exc
    if not isinstance(value, list):
        raise validation(**{name: "Must be a JSON list"})
    return [str(x) for x in value]


def parse_search(params: dict[str, Any]) -> tuple[SearchQuery, int, int, list[str], int, str]:
    """CKAN `package_search` parameters → our query, rows, start, facet fields, facet limit, sort."""
    q = SearchQuery()
    text = str(params.get("q") or "").strip()
    q.text = None if text in ("", "*:*", "*") else text
    fq = str(params.get("fq") or "").strip()
    if fq:
        try:
            tokens = shlex.split(fq.replace(" AND ", " "))
        except ValueError as exc:
            raise CkanError(409, "Search Query Error", f"Search Query is invalid: {exc}") from exc
        orgs = _org_by_name()
        for token in tokens:
            field, sep, value = token.partition(":")
            field = field.lstrip("+")
            if not sep or not value:
                raise CkanError(409, "Search Query Error", f"Search Query is invalid: {token!r}")
            if field in ("organization", "owner_org"):
                m = orgs.get(value) or municipality_by_ags().get(value)
                q.municipalities.append(m.ags if m else value)
            elif field == "groups":
                q.themes.append(vocab.THEME_BASE + value.upper())
            elif field == "tags":
                q.keywords.append(value)
            elif field == "res_format":
                q.formats.append(next((n for n in vocab.FORMATS if vocab.format_label(n).lower() == value.lower()),
                                      value.upper()))
            elif field == "license_id":
                q.licences.append(value)
            else:
                raise CkanError(409, "Search Query Error", f"Search Query is invalid: unknown field {field!r}")
    sort = str(params.get("sort") or "score desc, metadata_modified desc").strip()
    first = sort.split(",")[0].strip().lower()
    if first in ("score desc", "rank desc"):
        q.sort = "relevance"
    elif first in ("metadata_modified desc", "metadata_created desc"):
        q.sort = "date"
    elif first in ("title_string asc", "name asc", "title asc"):
        q.sort = "title"
    else:
        raise validation(sort="Unsupported sort; use score desc, metadata_modified desc or title_string asc")
    rows = _int(params, "rows", 10, 0, MAX_ROWS)
    start = _int(params, "start", 0, 0, 1_000_000)
    facet_fields = _list(params.get("facet.field"), "facet.field")
    unknown = [f for f in facet_fields if f not in _FACET_OF]
    if unknown:
        raise validation(**{"facet.field": f"Unsupported facet field(s): {', '.join(unknown)}"})
    facet_limit = _int(params, "facet.limit", 50, -1, 10_000)
    return q, rows, start, facet_fields, facet_limit, sort


def _facet_value(ckan_field: str, item: FacetItem) -> tuple[str, str]:
    if ckan_field == "organization":
        m = municipality_by_ags().get(item.value)
        return (org_name(m), m.name) if m else (item.value, item.label)
    if ckan_field == "groups":
        return theme_code(item.value), item.label
    if ckan_field == "res_format":
        return vocab.format_label(item.value), item.label
    return item.value, item.label


async def package_search(conn: Conn, params: dict[str, Any], base_url: str) -> dict[str, Any]:
    q, rows, start, facet_fields, facet_limit, sort = parse_search(params)
    facets_on = str(params.get("facet", "true")).lower() != "false"
    total, results, grouped = await service.search_window(conn, q, rows, start, base_url, with_facets=facets_on)
    facets: dict[str, dict[str, int]] = {}
    search_facets: dict[str, dict[str, Any]] = {}
    if facets_on:
        for ckan_field in facet_fields:
            items = grouped[_FACET_OF[ckan_field]]
            if facet_limit >= 0:
                items = items[:facet_limit]
            mapped = [(*_facet_value(ckan_field, i), i.count) for i in items]
            facets[ckan_field] = {name: count for name, _, count in mapped}
            search_facets[ckan_field] = {
                "title": ckan_field,
                "items": [{"name": n, "display_name": dn, "count": c} for n, dn, c in mapped],
            }
    return {"count": total, "results": [package(d) for d in results], "facets": facets,
            "search_facets": search_facets, "sort": sort}


async def package_show(conn: Conn, params: dict[str, Any], base_url: str) -> dict[str, Any]:
    ident = str(params.get("id") or params.get("name_or_id") or "").strip()
    if not ident:
        raise validation(id="Missing value")
    row = await repository.get_dataset(conn, ident)
    if row is None:
        try:
            row = await repository.get_dataset_by_id(conn, str(uuid.UUID(ident)))
        except ValueError:
            row = None
    if row is None or row["status"] != "published":
        raise not_found()
    return package(service.to_dataset(row, base_url))


async def organization_list(conn: Conn, params: dict[str, Any]) -> list[Any]:
    all_fields = str(params.get("all_fields", "false")).lower() in ("true", "1")
    counts = await repository.published_per_municipality(conn)
    orgs = sorted(municipalities(), key=org_name)
    sort = str(params.get("sort") or "name asc").lower()
    if sort.startswith("package_count"):
        orgs.sort(key=lambda m: counts.get(m.ags, 0), reverse=sort.endswith("desc"))
    elif sort.startswith(("name", "title")):
        orgs.sort(key=org_name, reverse=sort.endswith("desc"))
    else:
        raise validation(sort="Unsupported sort; use name or package_count")
    limit = _int(params, "limit", 1000, 0, 1000)
    offset = _int(params, "offset", 0, 0, 1_000_000)
    page = orgs[offset: offset + limit]
    if all_fields:
        return [organization(m, counts.get(m.ags, 0)) for m in page]
    return [org_name(m) for m in page]


async def tag_list(conn: Conn, params: dict[str, Any]) -> list[Any]:
    if params.get("vocabulary_id"):
        return []  # free tags only; there are no tag vocabularies
    query = params.get("query")
    prefix = None if not query else re.sub(r"([%_\\])", r"\\\1", str(query))
    names = await repository.tags(conn, prefix, 10_000)
    if str(params.get("all_fields", "false")).lower() in ("true", "1"):
        return [{"id": n, "name": n, "display_name": n, "vocabulary_id": None} for n in names]
    return names
