"""HTTP adapter of the open-data API: parse, call the service, represent, answer conditionally."""

from __future__ import annotations

import gzip
import hashlib
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import date, timedelta
from email.utils import format_datetime
from typing import Annotated, Any, Final, Literal, cast
from urllib.parse import urlencode

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.publisher.kpis import csvdata, repository, service
from services.publisher.kpis.definitions import DEFINITIONS, FAMILIES, Family
from services.publisher.kpis.schemas import (
    Comparison,
    KpiDefinitionList,
    KpiPage,
    MunicipalityList,
    Problem,
    ServiceList,
    TotalsPage,
)
from services.publisher.settings import PublisherSettings
from shared import ckm
from shared.http import PROBLEM, ProblemError
from shared.kpis import Granularity
from shared.reference import Municipality, municipalities, municipality_by_ags, services

router = APIRouter(tags=["open data"])

CSV = "text/csv; charset=utf-8; header=present"
JSON = "application/json"
_AGS = re.compile(r"^\d{8}$")
_LEIKA = re.compile(r"^\d{14}$")
_EARLIEST, _LATEST = date(2000, 1, 1), date(2099, 12, 31)

_PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "content": {PROBLEM: {}}, "description": "Bad request"},
    406: {"model": Problem, "content": {PROBLEM: {}}, "description": "No acceptable representation"},
    422: {"model": Problem, "content": {PROBLEM: {}}, "description": "Invalid parameter"},
}
_CSV_CONTENT = {"text/csv": {"schema": {"type": "string"}, "example": (
    "period,period_start,municipality,service,metric,dimension,value\r\n"
    "day,2026-03-01T00:00:00+01:00,06413000,99115005104000,sessions_started,,42\r\n"
    "day,2026-03-01T00:00:00+01:00,06413000,99115005104000,sessions_abandoned,,.\r\n")}}


# --- problem details ----------------------------------------------------------------------------------------

def invalid_param(request: Request, name: str, reason: str) -> ProblemError:
    """A query parameter is invalid: problem details naming it."""
    return invalid(request, f"{name}: {reason}", [{"name": name, "in": "query", "reason": reason}])


def invalid(request: Request, detail: str, params: list[dict[str, str]]) -> ProblemError:
    """422 naming the request path and each invalid parameter (`invalid-params`)."""
    members: dict[str, Any] = {"instance": request.url.path, "invalid-params": params}
    return ProblemError(422, "Invalid request parameter", detail, **members)


# --- conditional responses ----------------------------------------------------------------------------------

class VersionedCache:
    """Values of recent requests (ETags, suppressed tables), valid while the KPI change version they were
    computed under is current; least recently used entries leave first."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: OrderedDict[tuple[Any, ...], tuple[int, Any]] = OrderedDict()

    def get(self, key: tuple[Any, ...], version: int) -> Any:
        hit = self._entries.get(key)
        if hit is None or hit[0] != version:
            return None
        self._entries.move_to_end(key)
        return hit[1]

    def put(self, key: tuple[Any, ...], version: int, value: Any) -> None:
        if self._size <= 0:
            return
        self._entries[key] = (version, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)


def _wants_gzip(request: Request) -> bool:
    for part in request.headers.get("accept-encoding", "").split(","):
        token, _, params = part.strip().partition(";")
        if token.strip().lower() == "gzip":
            return not re.search(r"q\s*=\s*0(\.0*)?\s*$", params)
    return False


def _matches(if_none_match: str, etag: str) -> bool:
    tags = [t.strip() for t in if_none_match.split(",")]
    return "*" in tags or any(t.removeprefix("W/") == etag for t in tags)


Builder = Callable[[], Awaitable[tuple[bytes, str]]]


async def conditional(request: Request, key: tuple[Any, ...], build: Builder) -> Response:
    """Answer with a strong ETag per representation; 304 without a query when nothing changed since."""
    st = request.app.state
    settings: PublisherSettings = st.settings
    gz = _wants_gzip(request)
    cache_key = (*key, str(request.base_url), gz)
    changes = st.changes
    inm = request.headers.get("if-none-match")
    headers = {
        "Cache-Control": f"public, max-age={settings.cache_max_age_s}",
        "Last-Modified": format_datetime(changes.last_modified, usegmt=True),
        "Vary": "Accept, Accept-Encoding",
    }
    if inm and changes.live:
        known: str | None = st.etags.get(cache_key, changes.version)
        if known and _matches(inm, known):
            return Response(status_code=304, headers={**headers, "ETag": known})
    version, live = changes.version, changes.live  # read before the query: a later change must invalidate
    body, media_type = await build()
    if gz and len(body) >= settings.gzip_min_bytes:
        # level 1: for the JSON of 1,000 KPI rows (186 kB) 7.6 kB instead of 6.2 kB at level 5, in half the time
        body = gzip.compress(body, compresslevel=1, mtime=0)
        headers["Content-Encoding"] = "gzip"
    etag = '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'
    headers["ETag"] = etag
    if live:
        st.etags.put(cache_key, version, etag)
    if inm and _matches(inm, etag):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=media_type, headers=headers)


def _negotiate(request: Request, offers: tuple[str, ...]) -> str:
    """Pick from `offers` (media types) by the Accept header; the first offer wins ties and */*."""
    accept = request.headers.get("accept", "").strip()
    if not accept:
        return offers[0]
    ranges: list[tuple[float, int, str]] = []
    for i, part in enumerate(accept.split(",")):
        mt, *params = [p.strip() for p in part.split(";")]
        q = 1.0
        for p in params:
            name, _, value = p.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        ranges.append((q, i, mt.lower()))
    best: tuple[float, int, str] | None = None
    for rank, offer in enumerate(offers):
        typ = offer.split("/")[0]
        # the most specific range that matches an offer decides its quality (RFC 9110, 12.5.1)
        patterns = ("*/*", f"{typ}/*", offer)  # least to most specific
        matching = [(patterns.index(mt), q) for q, _i, mt in ranges if mt in patterns]
        if not matching:
            continue
        q = max(matching)[1]
        if q > 0 and (best is None or (q, -rank) > best[:2]):
            best = (q, -rank, offer)
    if best is None:
        raise StarletteHTTPException(406, "Not Acceptable: available are " + ", ".join(offers))
    return best[2]


# --- parameters ---------------------------------------------------------------------------------------------

def _split(values: list[str] | None) -> list[str]:
    return sorted({v.strip() for raw in values or [] for v in raw.split(",") if v.strip()})


def _checked(request: Request, name: str, values: list[str], pattern: re.Pattern[str], what: str) -> tuple[str, ...]:
    for v in values:
        if not pattern.match(v):
            raise invalid_param(request, name, f"{v[:40]!r} is not {what}")
    return tuple(values)


MunicipalityParam = Annotated[list[str] | None, Query(
    description="AGS (8 digits); repeat the parameter or separate by commas for several", examples=["06413000"],
)]
ServiceParam = Annotated[list[str] | None, Query(
    alias="service", description="LeiKa key (14 digits); repeat or separate by commas", examples=["99115005104000"],
)]
PeriodParam = Annotated[Literal["hour", "day", "month"], Query(description="granularity of the periods")]
FromParam = Annotated[date | None, Query(
    alias="from", description="first day, Europe/Berlin (default: `to` minus 30 days; hour: minus 1 day)")]
ToParam = Annotated[date | None, Query(alias="to", description="last day, Europe/Berlin, inclusive (default: today)")]
FamilyParam = Annotated[list[str] | None, Query(
    description="KPI families: " + ", ".join(FAMILIES) + "; repeat or separate by commas (default: all)")]


def _dates(request: Request, period: Granularity, date_from: date | None,
           date_to: date | None) -> tuple[date, date]:
    for name, d in (("from", date_from), ("to", date_to)):
        if d is not None and not _EARLIEST <= d <= _LATEST:
            raise invalid_param(request, name, f"must lie between {_EARLIEST} and {_LATEST}")
    settings: PublisherSettings = request.app.state.settings
    to = date_to or service.today_berlin()
    default_span = {"hour": 1, "day": 30, "month": 365}[period]
    frm = date_from or max(_EARLIEST, to - timedelta(days=default_span))
    if frm > to:
        raise invalid_param(request, "from", "must not be after 'to'")
    limit = {"hour": settings.max_hour_range_days, "day": settings.max_day_range_days}.get(period)
    if limit is not None and (to - frm).days + 1 > limit:
        raise invalid_param(request, "to", f"a {period} query covers at most {limit} days")
    return frm, to


def kpi_query(
    request: Request, municipality: MunicipalityParam = None, service_: ServiceParam = None,
    period: PeriodParam = "day", date_from: FromParam = None, date_to: ToParam = None, family: FamilyParam = None,
) -> service.KpiQuery:
    munis = _checked(request, "municipality", _split(municipality), _AGS, "an AGS of 8 digits")
    svcs = _checked(request, "service", _split(service_), _LEIKA, "a LeiKa key of 14 digits")
    fams = _split(family)
    for f in fams:
        if f not in FAMILIES:
            raise invalid_param(request, "family", f"{f[:40]!r} is not one of {', '.join(FAMILIES)}")
    frm, to = _dates(request, period, date_from, date_to)
    chosen: tuple[Family, ...] = tuple(f for f in FAMILIES if f in fams) or FAMILIES
    return service.KpiQuery(munis, svcs, period, frm, to, chosen)


Query_ = Annotated[service.KpiQuery, Depends(kpi_query)]
Limit = Annotated[int | None, Query(ge=1, le=100_000, description="page size (default 1000, at most the "
                                                                  "configured maximum)")]
Offset = Annotated[int, Query(ge=0, le=1_000_000_000, description="items to skip")]


def _page(request: Request, limit: int | None) -> int:
    settings: PublisherSettings = request.app.state.settings
    n = limit or settings.default_page_size
    if n > settings.max_page_size:
        raise invalid_param(request, "limit", f"must not exceed {settings.max_page_size}")
    return n


def _query_params(q: service.KpiQuery) -> list[tuple[str, str]]:
    params = [("municipality", m) for m in q.municipalities] + [("service", s) for s in q.services]
    params += [("period", q.period), ("from", q.date_from.isoformat()), ("to", q.date_to.isoformat())]
    if q.families != FAMILIES:
        params += [("family", f) for f in q.families]
    return params


def _url(request: Request, path: str, params: list[tuple[str, str]]) -> str:
    return f"{str(request.base_url).rstrip('/')}{path}?{urlencode(params)}"


PERTURBATION: Final = ckm.description()
"""How counts are protected, stated in every answer that holds counts."""


def _query_out(q: service.KpiQuery) -> dict[str, Any]:
    return {"municipality": list(q.municipalities), "service": list(q.services), "period": q.period,
            "from": q.date_from.isoformat(), "to": q.date_to.isoformat(), "family": list(q.families)}


async def _tables(request: Request, q: service.KpiQuery) -> list[service.Table]:
    """The perturbed tables of a query; reused while the KPI data version is unchanged (they depend on
    nothing else), so JSON, CSV, totals, pages and families of one query compute them once."""
    st = request.app.state
    changes = st.changes
    key = (q.municipalities, q.services, q.period, q.date_from, q.date_to)
    version, live = changes.version, changes.live
    if live:
        cached = st.tables.get(key, version)
        if cached is not None:
            return cast(list[service.Table], cached)
    start, end = q.bounds()
    most = st.settings.max_query_values
    # a connection only on a miss: answers from the caches (and 304s) must not wait for the pool
    async with st.pool.acquire() as conn:
        rows = await repository.kpi_rows(conn, q.period, start, end, list(q.municipalities) or None,
                                               list(q.services) or None, most + 1)
    if len(rows) > most:
        raise invalid_param(request, "to", f"the query covers more than {most} stored values; narrow municipality, "
                                           "service or the range")
    tables = service.build_tables(rows)
    if live:
        st.tables.put(key, version, tables)
    return tables


async def _cells(request: Request, q: service.KpiQuery, totals: bool) -> list[service.Cell]:
    """Published cells of a query in their stable order, kept with the tables for the data version."""
    st = request.app.state
    key = ("cells", q, totals)
    version, live = st.changes.version, st.changes.live
    if live:
        cached = st.tables.get(key, version)
        if cached is not None:
            return cast(list[service.Cell], cached)
    tables = await _tables(request, q)
    cells = service.total_cells(tables, q.families) if totals else service.kpi_cells(tables, q.families)
    if live:
        st.tables.put(key, version, cells)
    return cells


def _fmt(request: Request, offers: tuple[str, ...] = (JSON, "text/csv")) -> str:
    path = request.url.path
    if path.endswith(".csv"):
        return "csv"
    if path.endswith(".json"):
        return "json"
    return "csv" if _negotiate(request, offers) == "text/csv" else "json"


# --- routes -------------------------------------------------------------------------------------------------

_KPI_DOC = ("KPI values per period. Same query, two representations: JSON (default) or CSV by `Accept: text/csv` "
            "or the `.csv` suffix; `/v1/kpis/datapackage.json` describes the CSV. Counts are perturbed by the Cell "
            f"Key Method (at most ±{ckm.MAX_DEVIATION}, 0 stays 0; `perturbation` in the body, docs/privacy.md); "
            "rates, means and percentiles come from perturbed counts. Sorted by municipality, service, period "
            "start, metric, dimension.")


def _page_of(request: Request, q: service.KpiQuery, cells: list[service.Cell], offset: int,
             size: int) -> tuple[list[service.Cell], str | None]:
    """One page of cells and the URL of the next page (None on the last page)."""
    nxt = None
    if offset + size < len(cells):
        nxt = _url(request, request.url.path, [*_query_params(q), ("limit", str(size)), ("offset", str(offset + size))])
    return cells[offset:offset + size], nxt


@router.get("/v1/kpis", summary="KPI values per period", description=_KPI_DOC, response_model=KpiPage,
            responses={200: {"content": _CSV_CONTENT}, **_PROBLEM_RESPONSES})
@router.get("/v1/kpis.json", summary="KPI values per period (JSON)", response_model=KpiPage,
            responses=_PROBLEM_RESPONSES)
@router.get("/v1/kpis.csv", summary="KPI values per period (CSV)", response_class=Response,
            responses={200: {"content": _CSV_CONTENT}, **_PROBLEM_RESPONSES})
async def get_kpis(request: Request, q: Query_, limit: Limit = None, offset: Offset = 0) -> Response:
    fmt = _fmt(request)
    size = _page(request, limit)

    async def build() -> tuple[bytes, str]:
        cells = await _cells(request, q, totals=False)
        page, nxt = _page_of(request, q, cells, offset, size)
        if fmt == "csv":
            return csvdata.render(csvdata.KPI_COLUMNS, csvdata.kpi_rows(q.period, page)), CSV
        items = [{"period": q.period, "period_start": c[0], "municipality": c[1], "service": c[2], "metric": c[3],
                  "dimension": c[4], "value": c[5], "suppressed": c[6]} for c in page]
        body = {"query": _query_out(q), "perturbation": PERTURBATION, "total_items": len(cells), "offset": offset,
                "limit": size, "next": nxt, "items": items}
        return orjson.dumps(body), JSON

    return await conditional(request, ("kpis", fmt, q, size, offset), build)


@router.get("/v1/kpis/totals", summary="KPI totals over the whole range", response_model=TotalsPage,
            description="One value per municipality, service, metric and dimension for the whole range of the "
                        "same query as /v1/kpis. Each total is a cell of its own, perturbed by the Cell Key Method "
                        "like every count; totals need not equal the sum of the perturbed period values.",
            responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}, **_PROBLEM_RESPONSES})
@router.get("/v1/kpis/totals.json", summary="KPI totals (JSON)", response_model=TotalsPage,
            responses=_PROBLEM_RESPONSES)
@router.get("/v1/kpis/totals.csv", summary="KPI totals (CSV)", response_class=Response,
            responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}, **_PROBLEM_RESPONSES})
async def get_totals(request: Request, q: Query_, limit: Limit = None, offset: Offset = 0) -> Response:
    fmt = _fmt(request)
    size = _page(request, limit)

    async def build() -> tuple[bytes, str]:
        cells = await _cells(request, q, totals=True)
        page, nxt = _page_of(request, q, cells, offset, size)
        if fmt == "csv":
            rows = csvdata.total_rows(q.date_from.isoformat(), q.date_to.isoformat(), q.period, page)
            return csvdata.render(csvdata.TOTAL_COLUMNS, rows), CSV
        items = [{"municipality": c[1], "service": c[2], "metric": c[3], "dimension": c[4], "value": c[5],
                  "suppressed": c[6]} for c in page]
        body = {"query": _query_out(q), "perturbation": PERTURBATION, "total_items": len(cells), "offset": offset,
                "limit": size, "next": nxt, "items": items}
        return orjson.dumps(body), JSON

    return await conditional(request, ("totals", fmt, q, size, offset), build)


@router.get("/v1/kpis/datapackage.json", summary="Frictionless data package describing the CSV of a query",
            responses={200: {"content": {JSON: {"schema": {"type": "object"}}}}, **_PROBLEM_RESPONSES})
async def get_datapackage(request: Request, q: Query_) -> Response:
    async def build() -> tuple[bytes, str]:
        params = _query_params(q)
        pkg = csvdata.datapackage(_url(request, "/v1/kpis.csv", params),
                                  _url(request, "/v1/kpis/totals.csv", params))
        return orjson.dumps(pkg), JSON

    return await conditional(request, ("datapackage", q), build)


@router.get("/v1/comparison", summary="A municipality against Hessen and its size class", response_model=Comparison,
            description="Per service and KPI over the range: the municipality's value, the value of the six "
                        "member cities taken together (Hessen) and of the member cities of its size class "
                        "(population thresholds of the BBSR city types). A group's counts are cells of their own, "
                        "perturbed by the Cell Key Method; its KPIs are computed from them.",
            responses=_PROBLEM_RESPONSES)
async def get_comparison(
    request: Request, municipality: Annotated[str, Query(description="AGS of a member city", examples=["06413000"])],
    service_: ServiceParam = None, period: PeriodParam = "day", date_from: FromParam = None,
    date_to: ToParam = None,
) -> Response:
    subject = municipality_by_ags().get(municipality)
    if subject is None:
        raise invalid_param(request, "municipality", "not one of the member municipalities (see /v1/municipalities)")
    svcs = _checked(request, "service", _split(service_), _LEIKA, "a LeiKa key of 14 digits")
    frm, to = _dates(request, period, date_from, date_to)
    members = tuple(sorted(m.ags for m in municipalities()))
    q = service.KpiQuery(members, svcs, period, frm, to)

    async def build() -> tuple[bytes, str]:
        tables = await _tables(request, q)
        wanted = svcs or tuple(sorted({t.service for t in tables}))
        body = {
            "municipality": _municipality_out(subject),
            "size_class_members": [m.ags for m in service.size_class_members(subject)],
            "hessen_members": list(members), "period": period, "from": frm.isoformat(), "to": to.isoformat(),
            "perturbation": PERTURBATION, "items": service.comparison_items(subject, tables, wanted),
        }
        return orjson.dumps(body), JSON

    return await conditional(request, ("comparison", subject.ags, q), build)


def _municipality_out(m: Municipality) -> dict[str, Any]:
    cls = service.size_class(m.population)
    return {"ags": m.ags, "ars": m.ars, "name": m.name, "kreis": m.kreis, "population": m.population,
            "population_date": m.population_date, "political_geocoding_uri": m.political_geocoding_uri,
            "size_class": {"id": cls.id, "label_de": cls.label_de, "min_population": cls.min_population,
                           "max_population": cls.max_population}}


async def _static(request: Request, name: str, body: Callable[[], Any]) -> Response:
    async def build() -> tuple[bytes, str]:
        return orjson.dumps(body()), JSON

    return await conditional(request, (name,), build)


@router.get("/v1/municipalities", summary="Member municipalities (AGS, ARS, population, geocoding URI)",
            response_model=MunicipalityList)
async def get_municipalities(request: Request) -> Response:
    return await _static(request, "municipalities",
                         lambda: {"items": [_municipality_out(m) for m in municipalities()]})


@router.get("/v1/services", summary="Online services (LeiKa key, name, OZG-Leistung)", response_model=ServiceList)
async def get_services(request: Request) -> Response:
    return await _static(request, "services", lambda: {"items": [
        {"leika_key": s.leika_key, "name_de": s.name_de, "ozg_leistung": s.ozg_leistung, "typ": s.typ}
        for s in services()]})


@router.get("/v1/kpi-definitions", summary="What each KPI means (German and English) and its formula",
            response_model=KpiDefinitionList)
async def get_definitions(request: Request) -> Response:
    return await _static(request, "definitions", lambda: {"items": [
        {"metric": d.metric, "families": list(d.families), "kind": d.kind, "unit": d.unit, "dimension": d.dimension,
         "label_de": d.label_de, "label_en": d.label_en, "description_de": d.description_de,
         "description_en": d.description_en, "formula": d.formula} for d in DEFINITIONS]})
