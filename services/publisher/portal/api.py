"""HTTP adapters of the data portal: write API for data officers, search, hosted files, CKAN Action API."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import quote

import orjson
from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from services.publisher.catalog.service import CatalogContext
from services.publisher.portal import ckan, service
from services.publisher.portal.repository import SearchQuery
from services.publisher.portal.schemas import Dataset, DatasetIn, History, SearchResult, UploadResult
from services.publisher.portal.validation import _path, has_nul
from shared.db import Conn
from shared.http import PROBLEM, PROBLEM_BASE, Connection, ProblemError, Transaction, read_body

PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    s: {"description": d, "content": {PROBLEM: {}}}
    for s, d in ((401, "No or unknown API key"), (403, "Key not scoped to the municipality"),
                 (404, "No such dataset"), (409, "Name taken / dataset withdrawn"),
                 (422, "Invalid fields, each named in `errors`"))
}


WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


async def authenticate_first(request: Request) -> None:
    """Refuse a write from a caller without a valid data officer key before the body is read or validated."""
    key = service.bearer_key(request.headers.get("authorization"), request.headers.get("x-api-key"))
    async with request.app.state.pool.acquire() as conn:
        await service.authenticate(conn, key)


class ProblemRoute(APIRoute):
    """Answers request validation errors as problem details naming each field; every write authenticates
    before FastAPI reads and validates its body (401, never a 422 to a stranger)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        original = super().get_route_handler()
        writes = bool((self.methods or set()) & WRITE_METHODS)

        async def handler(request: Request) -> Response:
            if has_nul(*(v for _, v in request.query_params.multi_items()), *request.path_params.values()):
                raise ProblemError(400, "Bad Request", "parameters must not contain NUL characters")
            if writes:
                await authenticate_first(request)
            try:
                return await original(request)
            except RequestValidationError as exc:
                errors = [
                    {"field": _path(tuple(e["loc"][1:]) if e["loc"][:1] == ("body",) else tuple(e["loc"])),
                     "code": str(e["type"]), "detail": str(e["msg"]).removeprefix("Value error, ")}
                    for e in exc.errors()
                ]
                raise ProblemError(
                    422, "Invalid request", f"{len(errors)} field(s) invalid: " + ", ".join(e["field"] for e in errors),
                    type=PROBLEM_BASE + "invalid-dataset", errors=errors,
                ) from exc

        return handler


router = APIRouter(route_class=ProblemRoute, tags=["portal"])
ckan_router = APIRouter(tags=["ckan"])

Authorization = Annotated[str | None, Header(description="Bearer <data officer key>")]
ApiKey = Annotated[str | None, Header(alias="X-API-Key", description="alternative to Authorization")]


def _base(request: Request) -> str:
    return str(request.app.state.settings.public_base_url).rstrip("/")


def _now() -> datetime:
    return datetime.now(UTC)


@router.post("/v1/portal/datasets", status_code=201, response_model=Dataset, responses=PROBLEM_RESPONSES,
             summary="Register a dataset (data officers)")
async def create_dataset(
    request: Request, response: Response, conn: Transaction, ds: DatasetIn, authorization: Authorization = None,
    x_api_key: ApiKey = None,
) -> Dataset:
    officer = await service.authenticate(conn, service.bearer_key(authorization, x_api_key))
    created = await service.create(conn, officer, ds, _now(), _base(request))
    response.headers["Location"] = f"/v1/portal/datasets/{created.name}"
    return created


@router.put("/v1/portal/datasets/{name}", response_model=Dataset, responses=PROBLEM_RESPONSES,
            summary="Replace a dataset's description (hosted files stay)")
async def update_dataset(
    request: Request, conn: Transaction, name: str, ds: DatasetIn, authorization: Authorization = None,
    x_api_key: ApiKey = None,
) -> Dataset:
    officer = await service.authenticate(conn, service.bearer_key(authorization, x_api_key))
    return await service.update(conn, officer, name, ds, _now(), _base(request))


@router.delete("/v1/portal/datasets/{name}", response_model=Dataset, responses=PROBLEM_RESPONSES,
               summary="Withdraw a dataset (leaves catalog, search and CKAN API; stays in the history)")
async def withdraw_dataset(
    request: Request, conn: Transaction, name: str, authorization: Authorization = None, x_api_key: ApiKey = None
) -> Dataset:
    officer = await service.authenticate(conn, service.bearer_key(authorization, x_api_key))
    return await service.withdraw(conn, officer, name, _now(), _base(request))


async def upload_body(request: Request) -> bytes:
    """The uploaded file, read before a connection is taken (a slow upload holds none)."""
    limit = request.app.state.settings.portal_max_upload_bytes
    too_large = ProblemError(413, "Payload Too Large", f"file exceeds {limit} bytes",
                             type=PROBLEM_BASE + "file-too-large")
    return await read_body(request, limit, too_large)


@router.put(
    "/v1/portal/datasets/{name}/files/{filename}", status_code=201, response_model=UploadResult,
    responses={**PROBLEM_RESPONSES, 413: {"description": "File too large"},
               415: {"description": "Not CSV/JSON/GeoJSON"},
               422: {"description": "Invalid file; for CSV the Frictionless report is in `report`"}},
    summary="Upload a file (CSV, JSON, GeoJSON) as a new hosted distribution; the request body is the file",
)
async def upload_file(
    request: Request, body: Annotated[bytes, Depends(upload_body)], conn: Transaction, name: str, filename: str,
    title: Annotated[str | None, Query(max_length=300)] = None, authorization: Authorization = None,
    x_api_key: ApiKey = None,
) -> UploadResult:
    # ProblemRoute refused strangers before the upload was read; the officer's scope is checked in the transaction
    officer = await service.authenticate(conn, service.bearer_key(authorization, x_api_key))
    limit = request.app.state.settings.portal_max_upload_bytes
    return await service.add_file(conn, officer, name, filename, body, title, limit, _now(), _base(request))


@router.get("/v1/portal/datasets", response_model=SearchResult, summary="Search published datasets (German)")
async def search_datasets(
    request: Request,
    q: Annotated[str | None, Query(max_length=500, description="German full-text query")] = None,
    municipality: Annotated[list[str] | None, Query(description="AGS, repeatable")] = None,
    theme: Annotated[list[str] | None, Query(description="EU data-theme IRI, repeatable")] = None,
    format: Annotated[list[str] | None, Query(description="EU file-type name (CSV, JSON, GEOJSON, ...)")] = None,
    licence: Annotated[list[str] | None, Query(description="dcat-ap.de licence IRI, repeatable")] = None,
    keyword: Annotated[list[str] | None, Query()] = None,
    sort: Literal["relevance", "date", "title"] = "relevance",
    page: Annotated[int, Query(ge=1, le=10_000)] = 1,
    size: Annotated[int, Query(ge=1, le=100)] = 20,
    *, conn: Connection,
) -> SearchResult:
    query = SearchQuery(text=(q or "").strip() or None, municipalities=municipality or [], themes=theme or [],
                        formats=format or [], licences=licence or [], keywords=keyword or [], sort=sort)
    return await service.search(conn, query, page, size, _base(request))


@router.get("/v1/portal/datasets/{name}", response_model=Dataset, responses=PROBLEM_RESPONSES,
            summary="One published dataset (410 once withdrawn)")
async def get_dataset(request: Request, conn: Connection, name: str) -> Dataset:
    return await service.get(conn, name, _base(request))


@router.get("/v1/portal/datasets/{name}/datapackage.json", responses=PROBLEM_RESPONSES,
            summary="Frictionless Data Package of the dataset's hosted files (CSVs with their Table Schema)")
async def get_data_package(request: Request, conn: Connection, name: str) -> JSONResponse:
    descriptor = await service.data_package(conn, name, _base(request))
    return JSONResponse(descriptor, headers={"Cache-Control": "public, max-age=300"})


@router.get("/v1/portal/datasets/{name}/history", response_model=History, responses=PROBLEM_RESPONSES,
            summary="Every version of a dataset, withdrawals included")
async def get_history(conn: Connection, name: str) -> History:
    return await service.history(conn, name)


@router.api_route("/portal/files/{file_id}/{filename}", methods=["GET", "HEAD"], summary="A hosted file",
                  responses={304: {"description": "Not modified"}, 404: {"description": "No such file"}})
async def get_file(
    conn: Connection, file_id: str, filename: str, if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    f = await service.hosted_file(conn, file_id, filename, if_none_match)
    ascii_name = f.filename.encode("ascii", "replace").decode().replace("?", "_")
    headers = {"ETag": f.etag, "Cache-Control": "public, max-age=300",
               "Content-Disposition": f"inline; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(f.filename)}"}
    if f.content is None:
        return Response(status_code=304, headers=headers)
    return Response(f.content, media_type=f.media_type, headers=headers)


# --- CKAN Action API ------------------------------------------------------------------------------------------

ACTIONS = ("status_show", "site_read", "package_list", "current_package_list_with_resources", "package_show",
           "package_search", "resource_show", "organization_list", "organization_show", "group_list", "group_show",
           "tag_list", "tag_show", "license_list", "help_show")
KPI_PROVIDER = "kpi"


async def _ckan_params(request: Request) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for name, value in request.query_params.multi_items():
        # repeated parameters (fq_list, facet.field) arrive as lists, as CKAN reads them
        params[name] = [*params[name], value] if isinstance(params.get(name), list) else (
            [params[name], value] if name in params else value)
    if request.method == "POST":
        raw = await request.body()
        if raw:
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise ckan.CkanError(400, "Bad request", f"JSON Error: {exc}") from exc
            if not isinstance(body, dict):
                raise ckan.CkanError(400, "Bad request", "JSON Error: the body must be an object")
            params.update(body)
    if "\\u0000" in orjson.dumps(params).decode():
        raise ckan.validation(params="must not contain NUL characters")
    return params


async def _dispatch(request: Request, conn: Conn, action: str, params: dict[str, Any]) -> Any:
    settings = request.app.state.settings
    if action == "help_show":
        return f"CKAN-compatible read API of Kommunal-Pulse; actions: {', '.join(ACTIONS)}"
    if action == "site_read":
        return True
    if action == "status_show":
        return ckan.status_show(_base(request), settings.catalog_title, settings.catalog_description)
    if action == "license_list":
        return ckan.license_list()
    if action not in ACTIONS:
        raise ckan.CkanError(400, "Bad request", f"Bad request - Action name not known: {action}")
    registry = getattr(request.app.state, "catalog_registry", None)
    kpi = await registry.collect_from(CatalogContext(conn=conn, base_url=_base(request)), KPI_PROVIDER) \
        if registry is not None else ()
    src = ckan.Sources(conn=conn, base_url=_base(request), kpi=kpi)
    handler = getattr(ckan, action)
    return await handler(src, params)


@ckan_router.api_route("/api/3/action/{action}", methods=["GET", "POST"],
                       summary="CKAN Action API (read): " + ", ".join(ACTIONS))
@ckan_router.api_route("/api/action/{action}", methods=["GET", "POST"], include_in_schema=False)
async def ckan_action(request: Request, conn: Connection, action: str) -> JSONResponse:
    help_url = f"{_base(request)}/api/3/action/help_show?name={quote(action)}"
    try:
        params = await _ckan_params(request)
        result = await _dispatch(request, conn, action, params)
    except ckan.CkanError as err:
        return JSONResponse(ckan.error_envelope(help_url, err), status_code=err.status)
    return JSONResponse(ckan.envelope(help_url, result))
