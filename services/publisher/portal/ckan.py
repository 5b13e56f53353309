"""CKAN-compatible read API (Action API v3): parameters, package dictionaries and the response envelope.

Follows the documented shapes of CKAN 2.10 (`ckan.logic.action.get`): every answer is
`{"help": ..., "success": true, "result": ...}`, failures `{"success": false, "error": {"__type": ...}}`.
Organisations are the municipalities; groups are the EU data themes (lower-case codes, as on GovData).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from services.publisher.catalog import service as catalog
from services.publisher.portal import repository, service, solr, vocab
from services.publisher.portal.repository import AllOf, AnyOf, CkanFilter, Cond, Everything, Negated
from services.publisher.portal.schemas import Dataset
from shared.db import Conn
from shared.reference import Municipality, municipalities, municipality_by_ags

CKAN_VERSION = "2.10.4"  # the Action API release whose request and response shapes this API follows
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


def group(theme_iri: str, package_count: int | None = None) -> dict[str, Any]:
    """An EU data theme as a CKAN group (`tran`, `envi`, ...)."""
    code = theme_code(theme_iri)
    title = vocab.THEMES.get(theme_iri, theme_iri)
    out: dict[str, Any] = {
        "id": code, "name": code, "title": title, "display_name": title, "type": "group", "is_organization": False,
        "state": "active", "approval_status": "approved", "image_url": "", "image_display_url": "",
        "description": f"Datensätze zum Thema {title} ({theme_iri})",
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
        "groups": [group(t) for t in d.themes],
        "resources": resources, "num_resources": len(resources), "extras": extras,
        "relationships_as_object": [], "relationships_as_subject": [],
    }




# --- the KPI datasets of the catalog as packages ---------------------------------------------------------------


def _iri(kind: str, code: str) -> str:
    return code if code.startswith("http") else f"{catalog.EU}{kind}/{code}"


def _format_name(code: str) -> str:
    return code.rsplit("/", 1)[-1]


def kpi_id(d: catalog.CatalogDataset) -> str:
    """Stable package id of a KPI dataset (UUID 5 of its catalog IRI)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"kommunal-pulse:catalog:{d.id}"))


def _kpi_time(d: catalog.CatalogDataset, which: str) -> datetime | None:
    """When a KPI dataset was issued / last changed; None while no KPI has arrived at all."""
    return d.issued if which == "created" else (d.modified or d.issued)


def kpi_row(d: catalog.CatalogDataset) -> dict[str, Any]:
    """The indexed fields of a KPI dataset, searched together with the registered datasets."""
    return {
        "id": kpi_id(d), "name": d.id, "municipality": d.spatial_ags, "title": d.title, "description": d.description,
        "keywords": list(d.keywords), "themes": [_iri("data-theme", t) for t in d.themes],
        "licence": d.distributions[0].license, "formats": sorted({_format_name(r.format) for r in d.distributions}),
        "created_at": _kpi_time(d, "created"), "modified_at": _kpi_time(d, "modified"),
        "num_resources": len(d.distributions),
    }


def kpi_package(d: catalog.CatalogDataset) -> dict[str, Any]:
    """A KPI dataset of the catalog as a CKAN package dictionary."""
    pid = kpi_id(d)
    m = municipality_by_ags()[d.spatial_ags] if d.spatial_ags else None
    licence = d.distributions[0].license
    times = [_kpi_time(d, which) for which in ("created", "modified")]
    created, modified = (None if t is None else _ckan_time(t) for t in times)
    resources = [
        {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, r.access_url)), "package_id": pid, "position": i,
            "name": r.title, "description": r.description or "", "url": r.download_url or r.access_url,
            "format": vocab.format_label(_format_name(r.format)), "mimetype": r.media_type, "state": "active",
            "url_type": None, "size": None, "hash": "", "license": r.license, "created": created,
            "last_modified": modified,
        }
        for i, r in enumerate(d.distributions)
    ]
    extras = [
        {"key": "spatial_uri", "value": catalog.geocoding_uri(m)},
        {"key": "frequency", "value": _iri("frequency", d.frequency or "UNKNOWN")},
        {"key": "theme", "value": ",".join(_iri("data-theme", t) for t in d.themes)},
        {"key": "publisher_name", "value": d.publisher.name},
        {"key": "contact_name", "value": d.contact_point.name},
    ]
    if d.contact_point.email:
        extras.append({"key": "contact_email", "value": d.contact_point.email})
    if d.temporal_start:
        extras.append({"key": "temporal_start", "value": d.temporal_start.isoformat()})
    if d.temporal_end:
        extras.append({"key": "temporal_end", "value": d.temporal_end.isoformat()})
    return {
        "id": pid, "name": d.id, "title": d.title, "notes": d.description, "type": "dataset", "state": "active",
        "private": False, "url": d.landing_page or "", "version": None,
        "license_id": licence, "license_title": vocab.LICENCES.get(licence, licence), "license_url": licence,
        "isopen": True, "author": d.publisher.name, "author_email": None,
        "maintainer": d.contact_point.name, "maintainer_email": d.contact_point.email,
        "metadata_created": created, "metadata_modified": modified,
        "owner_org": m.ags if m else None, "organization": organization(m) if m else None,
        "tags": [{"name": k, "display_name": k, "state": "active", "vocabulary_id": None} for k in d.keywords],
        "num_tags": len(d.keywords),
        "groups": [group(_iri("data-theme", t)) for t in d.themes],
        "resources": resources, "num_resources": len(resources), "extras": extras,
        "relationships_as_object": [], "relationships_as_subject": [],
    }


@dataclass(frozen=True, slots=True)
class Sources:
    """What the actions read: a connection, the public base URL and the catalog's KPI datasets."""

    conn: Conn
    base_url: str
    kpi: Sequence[catalog.CatalogDataset]

    def kpi_by_name(self) -> dict[str, catalog.CatalogDataset]:
        return {d.id: d for d in self.kpi}


# --- q and fq to a filter ---------------------------------------------------------------------------------------

_NOW = re.compile(r"^NOW(?:/(DAY|HOUR))?(?:([+-])(\d+)(DAYS?|HOURS?|MINUTES?))?(?:/(DAY|HOUR))?$")


def _query_error(message: str) -> CkanError:
    return CkanError(409, "Search Query Error", f"Search Query is invalid: {message}")


def solr_time(value: str, now: datetime) -> datetime:
    """A Solr date (`2024-05-01T10:00:00Z`, with fractions, a bare date, `NOW`, `NOW-7DAYS`, `NOW/DAY`)."""
    match = _NOW.match(value)
    if match:
        t = now
        for rounding in (match.group(1), match.group(5)):
            if rounding == "DAY":
                t = t.replace(hour=0, minute=0, second=0, microsecond=0)
            elif rounding == "HOUR":
                t = t.replace(minute=0, second=0, microsecond=0)
        if match.group(2):
            unit = match.group(4).rstrip("S").lower() + "s"
            delta = timedelta(**{unit: int(match.group(3))})
            t = t + delta if match.group(2) == "+" else t - delta
        return t
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise _query_error(f"not a date: {value!r}") from exc
    return t if t.tzinfo else t.replace(tzinfo=UTC)  # Solr works in UTC


def _municipality(value: str) -> str | None:
    m = _org_by_name().get(value) or municipality_by_ags().get(value)
    return m.ags if m else None


def _format(value: str) -> str:
    return next((n for n in vocab.FORMATS if vocab.format_label(n).lower() == value.lower()), value.upper())


_ALWAYS = {"type": ("dataset",), "state": ("active",), "capacity": ("public",), "private": ("false",),
           "dataset_type": ("dataset",)}
_RANGE_KINDS = {"metadata_modified": "modified", "metadata_created": "created", "num_resources": "num_resources",
                "num_tags": "num_tags"}
FIELDS = frozenset({"text", "name", "id", "title", "notes", "organization", "owner_org", "groups", "tags",
                    "res_format", "license_id", *_ALWAYS, *_RANGE_KINDS})


def _term(t: solr.Term) -> CkanFilter:
    v = t.value
    if t.field in (None, "text"):
        return Cond("phrase" if t.phrase else "text", v)
    if t.field in _ALWAYS:
        return Everything() if v.lower() in _ALWAYS[t.field] else Cond("false")
    if t.prefix and t.field not in ("name", "tags"):
        raise _query_error(f"wildcards are supported on name and tags only, not on {t.field}")
    if t.field == "name":
        return Cond("name_prefix" if t.prefix else "name", v)
    if t.field == "tags":
        return Cond("keyword_prefix" if t.prefix else "keyword", v)
    if t.field == "id":
        return Cond("id", v)
    if t.field in ("title", "notes"):
        return Cond("title" if t.field == "title" else "notes", v)
    if t.field in ("organization", "owner_org"):
        ags = _municipality(v)
        return Cond("municipality", ags) if ags else Cond("false")
    if t.field == "groups":
        return Cond("theme", vocab.THEME_BASE + v.upper())
    if t.field == "res_format":
        return Cond("format", _format(v))
    if t.field == "license_id":
        return Cond("licence", v)
    assert t.field is not None
    return _range(solr.Range(t.field, v, v), datetime.now(UTC))


def _range(r: solr.Range, now: datetime) -> CkanFilter:
    kind = _RANGE_KINDS.get(r.field)
    if kind is None:
        raise _query_error(f"ranges are supported on {', '.join(sorted(_RANGE_KINDS))}, not on {r.field}")
    parts: list[CkanFilter] = []
    for bound, inclusive, op in ((r.low, r.low_inclusive, "g"), (r.high, r.high_inclusive, "l")):
        if bound is None:
            continue
        if kind in ("modified", "created"):
            value: Any = solr_time(bound, now)
            parts.append(Cond(f"{kind}_{op}{'e' if inclusive else 't'}", value))
        else:
            try:
                number = int(bound)
            except ValueError as exc:
                raise _query_error(f"not a number: {bound!r}") from exc
            number = number if inclusive else number + (1 if op == "g" else -1)
            parts.append(Cond(f"{kind}_{op}e", number))
    return AllOf(tuple(parts))


def to_filter(node: solr.Node, now: datetime) -> CkanFilter:
    """A parsed query as conditions on the indexed fields (organisation names to AGS, group codes to IRIs, ...)."""
    if isinstance(node, solr.Term):
        return _term(node)
    if isinstance(node, solr.Range):
        return _range(node, now)
    if isinstance(node, solr.Not):
        return Negated(to_filter(node.item, now))
    if isinstance(node, solr.And):
        return AllOf(tuple(to_filter(i, now) for i in node.items))
    if isinstance(node, solr.Or):
        return AnyOf(tuple(to_filter(i, now) for i in node.items))
    return Everything()


def parse_query(text: str, now: datetime) -> tuple[CkanFilter, list[str]]:
    """One `q` or `fq` value: the filter and the free-text words (for ranking)."""
    try:
        tree = solr.parse(text)
    except solr.QuerySyntaxError as exc:
        raise _query_error(str(exc)) from exc
    unknown = solr.fields(tree) - FIELDS
    if unknown:
        raise _query_error(f"unknown field(s) {', '.join(sorted(unknown))}; "
                           f"searchable: {', '.join(sorted(FIELDS))}")
    return to_filter(tree, now), _free_words(tree)


def _free_words(node: solr.Node) -> list[str]:
    if isinstance(node, solr.Term):
        return [node.value] if node.field in (None, "text") else []
    if isinstance(node, solr.And | solr.Or):
        return [w for i in node.items for w in _free_words(i)]
    return []


# --- package_search -------------------------------------------------------------------------------------------


def _int(params: dict[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    raw = params.get(name, default)
    if raw in (None, ""):
        raw = default
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


def _bool(params: dict[str, Any], name: str, default: bool) -> bool:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    if isinstance(raw, bool):
        return raw
    return str(raw).lower() in ("true", "1", "yes", "on")


def parse_sort(raw: str) -> list[tuple[str, bool]]:
    """CKAN's `sort` (`score desc, metadata_modified desc`, `id asc`, `title_string asc`, ...)."""
    out: list[tuple[str, bool]] = []
    for part in raw.split(","):
        words = part.split()
        if not words:
            continue
        key, direction = words[0], (words[1].lower() if len(words) > 1 else "asc")
        key = {"rank": "score", "metadata_modified_date": "metadata_modified"}.get(key, key)
        if (key != "score" and key not in repository.SORT_COLUMNS) or direction not in ("asc", "desc") \
                or len(words) > 2:
            raise validation(sort=f"Unsupported sort {part.strip()!r}; use score, "
                                  f"{', '.join(sorted(repository.SORT_COLUMNS))} with asc or desc")
        out.append((key, direction == "desc"))
    return out


@dataclass(frozen=True, slots=True)
class SearchParams:
    where: CkanFilter
    rank_text: str | None
    rows: int
    start: int
    sort: list[tuple[str, bool]]
    sort_text: str
    fields: list[str] | None
    facet: bool
    facet_fields: list[str]
    facet_limit: int
    facet_mincount: int


def parse_search(params: dict[str, Any], now: datetime | None = None) -> SearchParams:
    """CKAN `package_search` parameters (q, fq, fq_list, rows, start, sort, facet.*) as one query."""
    now = now or datetime.now(UTC)
    parts: list[CkanFilter] = []
    words: list[str] = []
    fqs = [str(params.get("q") or ""), str(params.get("fq") or "")]
    fq_list = params.get("fq_list")
    if fq_list:
        fqs += [str(x) for x in fq_list] if isinstance(fq_list, list) else _list(fq_list, "fq_list")
    for i, text in enumerate(fqs):
        if text.strip():
            where, free = parse_query(text, now)
            parts.append(where)
            if i == 0:
                words += free
    sort_text = str(params.get("sort") or "score desc, metadata_modified desc").strip()
    facet_fields = _list(params.get("facet.field"), "facet.field")
    unknown = [f for f in facet_fields if f not in _FACET_OF]
    if unknown:
        raise validation(**{"facet.field": f"Unsupported facet field(s): {', '.join(unknown)}"})
    return SearchParams(
        where=AllOf(tuple(parts)),
        rank_text=" ".join(words) or None,
        # like CKAN (`ckan.search.rows_max`), more rows than the maximum are capped, not refused
        rows=min(_int(params, "rows", 10, 0, 10_000_000), MAX_ROWS),
        start=_int(params, "start", 0, 0, 1_000_000),
        sort=parse_sort(sort_text), sort_text=sort_text,
        fields=_field_list(params.get("fl")),
        facet=_bool(params, "facet", True),
        facet_fields=facet_fields,
        facet_limit=_int(params, "facet.limit", 50, -1, 10_000),
        facet_mincount=_int(params, "facet.mincount", 1, 0, 1_000_000),
    )


def _field_list(raw: Any) -> list[str] | None:
    """CKAN's `fl`: the package fields to return (comma or space separated); None = whole packages."""
    if raw in (None, ""):
        return None
    names = raw if isinstance(raw, list) else re.split(r"[,\s]+", str(raw))
    fields = [str(n) for n in names if n]
    return None if not fields or "*" in fields else fields


def _facet_value(ckan_field: str, value: str) -> tuple[str, str]:
    if ckan_field == "organization":
        m = municipality_by_ags().get(value)
        return (org_name(m), m.name) if m else (value, value)
    if ckan_field == "groups":
        return theme_code(value), vocab.THEMES.get(value, value)
    if ckan_field == "res_format":
        return vocab.format_label(value), vocab.format_label(value)
    if ckan_field == "license_id":
        return value, vocab.LICENCES.get(value, value)
    return value, value


async def _packages(src: Sources, rows: list[tuple[str, str, str]]) -> list[dict[str, Any]]:
    """Package dictionaries for (source, id, name) rows, in their order."""
    portal_ids = [pid for source, pid, _ in rows if source == "portal"]
    stored = {str(r["id"]): r for r in await repository.published_by_ids(src.conn, portal_ids)} if portal_ids else {}
    kpi = src.kpi_by_name()
    out = []
    for source, pid, name in rows:
        if source == "kpi":
            out.append(kpi_package(kpi[name]))
        elif pid in stored:
            out.append(package(service.to_dataset(stored[pid], src.base_url)))
    return out


async def _search(src: Sources, p: SearchParams) -> tuple[repository.CkanPage, list[dict[str, Any]]]:
    page = await repository.ckan_search(src.conn, [kpi_row(d) for d in src.kpi], p.where, p.sort, p.rank_text,
                                        p.rows, p.start, p.facet)
    return page, await _packages(src, page.rows)


async def package_search(src: Sources, params: dict[str, Any]) -> dict[str, Any]:
    p = parse_search(params)
    page, results = await _search(src, p)
    facets: dict[str, dict[str, int]] = {}
    search_facets: dict[str, dict[str, Any]] = {}
    if p.facet:
        grouped: dict[str, list[tuple[str, int]]] = {}
        for facet, value, n in page.facets:
            grouped.setdefault(facet, []).append((value.strip(), n))
        for ckan_field in p.facet_fields:
            items = sorted(grouped.get(_FACET_OF[ckan_field], []), key=lambda vn: (-vn[1], vn[0]))
            items = [(v, n) for v, n in items if n >= p.facet_mincount]
            if p.facet_limit >= 0:
                items = items[:p.facet_limit]
            mapped = [(*_facet_value(ckan_field, v), n) for v, n in items]
            facets[ckan_field] = {name: count for name, _, count in mapped}
            search_facets[ckan_field] = {
                "title": ckan_field,
                "items": [{"name": n, "display_name": dn, "count": c} for n, dn, c in mapped],
            }
    if p.fields is not None:
        results = [{k: r.get(k) for k in p.fields} for r in results]
    return {"count": page.total, "results": results, "facets": facets, "search_facets": search_facets,
            "sort": p.sort_text}


# --- the other read actions -------------------------------------------------------------------------------------


def _ident(params: dict[str, Any], *names: str) -> str:
    for name in names:
        value = params.get(name)
        if value not in (None, ""):
            return str(value).strip()
    raise validation(**{names[0]: "Missing value"})


async def _find_package(src: Sources, ident: str) -> dict[str, Any]:
    kpi = src.kpi_by_name().get(ident) or next((d for d in src.kpi if kpi_id(d) == ident), None)
    if kpi is not None:
        return kpi_package(kpi)
    row = await repository.get_dataset(src.conn, ident)
    if row is None:
        try:
            row = await repository.get_dataset_by_id(src.conn, str(uuid.UUID(ident)))
        except ValueError:
            row = None
    if row is None or row["status"] != "published":
        raise not_found("Not found: Dataset not found")
    return package(service.to_dataset(row, src.base_url))


async def package_show(src: Sources, params: dict[str, Any]) -> dict[str, Any]:
    return await _find_package(src, _ident(params, "id", "name_or_id"))


async def package_list(src: Sources, params: dict[str, Any]) -> list[str]:
    """Names of all public datasets, registered and KPI, in name order (`limit`, `offset`)."""
    names = sorted([*await repository.published_names(src.conn), *(d.id for d in src.kpi)])
    offset = _int(params, "offset", 0, 0, 10_000_000)
    limit = params.get("limit")
    end = None if limit in (None, "") else offset + _int(params, "limit", 0, 0, 10_000_000)
    return names[offset:end]


async def current_package_list_with_resources(src: Sources, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Full packages, most recently modified first (`limit` default 10, `offset`)."""
    p = SearchParams(where=Everything(), rank_text=None, rows=_int(params, "limit", 10, 0, MAX_ROWS),
                     start=_int(params, "offset", 0, 0, 10_000_000), sort=[("metadata_modified", True)],
                     sort_text="metadata_modified desc", fields=None, facet=False, facet_fields=[], facet_limit=0,
                     facet_mincount=1)
    _, results = await _search(src, p)
    return results


async def resource_show(src: Sources, params: dict[str, Any]) -> dict[str, Any]:
    ident = _ident(params, "id")
    for d in src.kpi:
        for r in kpi_package(d)["resources"]:
            if r["id"] == ident:
                return dict(r)
    try:
        rid = uuid.UUID(ident)
    except ValueError as exc:
        raise not_found("Not found: Resource was not found.") from exc
    row = await repository.published_file_dataset(src.conn, rid)
    if row is not None:
        found = next((r for r in package(service.to_dataset(row, src.base_url))["resources"] if r["id"] == ident),
                     None)
        if found is not None:
            return dict(found)
    raise not_found("Not found: Resource was not found.")


async def _count_by(src: Sources, facet: str) -> dict[str, int]:
    p = SearchParams(where=Everything(), rank_text=None, rows=0, start=0, sort=[], sort_text="", fields=None,
                     facet=True, facet_fields=[], facet_limit=-1, facet_mincount=1)
    page, _ = await _search(src, p)
    return {value.strip(): n for f, value, n in page.facets if f == facet}


async def _datasets_of(src: Sources, cond: Cond, limit: int) -> tuple[int, list[dict[str, Any]]]:
    p = SearchParams(where=cond, rank_text=None, rows=limit, start=0, sort=[("name", False)], sort_text="name asc",
                     fields=None, facet=False, facet_fields=[], facet_limit=0, facet_mincount=1)
    page, results = await _search(src, p)
    return page.total, results


def _sorted(items: list[Any], params: dict[str, Any], key_name: Any, key_count: Any) -> list[Any]:
    sort = str(params.get("sort") or "name asc").lower().strip()
    if sort.startswith("package_count"):
        return sorted(items, key=key_count, reverse=not sort.endswith("asc"))
    if sort.startswith(("name", "title")):
        return sorted(items, key=key_name, reverse=sort.endswith("desc"))
    raise validation(sort="Unsupported sort; use name, title or package_count with asc or desc")


async def organization_list(src: Sources, params: dict[str, Any]) -> list[Any]:
    counts = await _count_by(src, "municipality")
    orgs = _sorted(list(municipalities()), params, org_name, lambda m: counts.get(m.ags, 0))
    limit = _int(params, "limit", 1000, 0, 1000)
    offset = _int(params, "offset", 0, 0, 1_000_000)
    page = orgs[offset: offset + limit]
    if _bool(params, "all_fields", False):
        return [organization(m, counts.get(m.ags, 0)) for m in page]
    return [org_name(m) for m in page]


async def organization_show(src: Sources, params: dict[str, Any]) -> dict[str, Any]:
    ident = _ident(params, "id")
    ags = _municipality(ident)
    if ags is None:
        raise not_found("Not found: Organization was not found.")
    m = municipality_by_ags()[ags]
    limit = _int(params, "limit", 1000, 0, 1000) if _bool(params, "include_datasets", False) else 0
    total, packages = await _datasets_of(src, Cond("municipality", ags), limit)
    out = organization(m, total)
    out.update({"created": None, "users": [], "groups": [], "tags": [], "extras": [],
                "num_followers": 0})
    if limit:
        out["packages"] = packages
    return out


async def group_list(src: Sources, params: dict[str, Any]) -> list[Any]:
    counts = await _count_by(src, "theme")
    themes = _sorted(list(vocab.THEMES), params, theme_code, lambda t: counts.get(t, 0))
    limit = _int(params, "limit", 1000, 0, 1000)
    offset = _int(params, "offset", 0, 0, 1_000_000)
    page = themes[offset: offset + limit]
    if _bool(params, "all_fields", False):
        return [group(t, counts.get(t, 0)) for t in page]
    return [theme_code(t) for t in page]


async def group_show(src: Sources, params: dict[str, Any]) -> dict[str, Any]:
    ident = _ident(params, "id").lower()
    iri = next((t for t in vocab.THEMES if theme_code(t) == ident or t.lower() == ident), None)
    if iri is None:
        raise not_found("Not found: Group was not found.")
    limit = _int(params, "limit", 1000, 0, 1000) if _bool(params, "include_datasets", False) else 0
    total, packages = await _datasets_of(src, Cond("theme", iri), limit)
    out = group(iri, total)
    out.update({"created": None, "users": [], "groups": [], "tags": [], "extras": [], "num_followers": 0})
    if limit:
        out["packages"] = packages
    return out


async def _all_tags(src: Sources) -> list[str]:
    names = set(await repository.tags(src.conn, None, 100_000))
    names.update(k for d in src.kpi for k in d.keywords)
    return sorted(names)


async def tag_list(src: Sources, params: dict[str, Any]) -> list[Any]:
    if params.get("vocabulary_id"):
        return []  # free tags only; there are no tag vocabularies
    names = await _all_tags(src)
    query = str(params.get("query") or params.get("q") or "").lower()
    if query:
        names = [n for n in names if query in n.lower()]
    if _bool(params, "all_fields", False):
        return [{"id": n, "name": n, "display_name": n, "vocabulary_id": None} for n in names]
    return names


async def tag_show(src: Sources, params: dict[str, Any]) -> dict[str, Any]:
    ident = _ident(params, "id", "name")
    if ident not in await _all_tags(src):
        raise not_found("Not found: Could not find tag")
    out: dict[str, Any] = {"id": ident, "name": ident, "display_name": ident, "vocabulary_id": None}
    if _bool(params, "include_datasets", False):
        _, out["packages"] = await _datasets_of(src, Cond("keyword", ident), 1000)
    return out


def license_list() -> list[dict[str, Any]]:
    return [
        {"id": iri, "title": title, "url": iri, "status": "active", "maintainer": "", "family": "",
         "od_conformance": "approved", "osd_conformance": "not reviewed", "domain_content": False,
         "domain_data": True, "domain_software": False, "is_generic": False}
        for iri, title in vocab.LICENCES.items()
    ]


def status_show(base_url: str, site_title: str, site_description: str) -> dict[str, Any]:
    return {"site_title": site_title, "site_description": site_description, "site_url": base_url,
            "ckan_version": CKAN_VERSION, "error_emails_to": None, "locale_default": "de", "extensions": []}
