"""HTTP adapter of the DCAT-AP.de catalog: `/catalog` by content negotiation, `/catalog.{ttl,rdf,jsonld}`."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Hashable
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from services.publisher.catalog import service as catalog
from services.publisher.catalog.service import FORMATS, RdfFormat
from shared.db import Conn
from shared.http import Connection, ProblemError

router = APIRouter(tags=["catalog"])

SUFFIXES: dict[str, RdfFormat] = {suffix: fmt for fmt, (_, suffix) in FORMATS.items()}
MEDIA_TYPES: dict[str, RdfFormat] = {media: fmt for fmt, (media, _) in FORMATS.items()}
MEDIA_TYPES["application/x-turtle"] = "turtle"
MEDIA_TYPES["application/xml"] = "xml"
MEDIA_TYPES["application/json"] = "json-ld"
_RDF_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {media: {} for media, _ in FORMATS.values()}, "description": "DCAT-AP.de 3.0"}
}


def negotiate(accept: str | None) -> RdfFormat | None:
    """Pick the serialisation for an Accept header (q-values honoured); Turtle when anything goes."""
    if not accept:
        return "turtle"
    offers: list[tuple[float, int, str]] = []
    for i, part in enumerate(accept.split(",")):
        media, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for p in params:
            if p.startswith("q="):
                try:
                    q = float(p[2:])
                except ValueError:
                    q = 0.0
        if q > 0:
            offers.append((-q, i, media.lower()))
    for _, _, media in sorted(offers):
        if media in MEDIA_TYPES:
            return MEDIA_TYPES[media]
        if media in ("*/*", "text/*", "application/*", "text/html"):
            return "turtle" if media != "application/*" else "xml"
    return None


class RenderCache:
    """Serialised pages by everything they depend on: rdflib is slow, and the datasets rarely change."""

    def __init__(self, size: int = 32) -> None:
        self._size = size
        self._items: OrderedDict[Hashable, tuple[bytes, str]] = OrderedDict()

    def get(self, key: Hashable) -> tuple[bytes, str] | None:
        hit = self._items.get(key)
        if hit is not None:
            self._items.move_to_end(key)
        return hit

    def put(self, key: Hashable, body: bytes) -> tuple[bytes, str]:
        entry = (body, f'"{hashlib.sha256(body).hexdigest()[:32]}"')
        self._items[key] = entry
        while len(self._items) > self._size:
            self._items.popitem(last=False)
        return entry


def _if_none_match(header: str | None, etag: str) -> bool:
    return header is not None and (header.strip() == "*" or etag in (t.strip() for t in header.split(",")))


def _info(settings: Any, base: str) -> catalog.CatalogInfo:
    return catalog.CatalogInfo(
        base_url=base, title=settings.catalog_title, description=settings.catalog_description,
        publisher=catalog.CatalogAgent(id="kommunal-pulse", name=settings.catalog_publisher_name),
        contributor_id=settings.catalog_contributor_id,
    )


async def _render(request: Request, conn: Conn, fmt: RdfFormat, page: int, page_size: int | None) -> Response:
    settings = request.app.state.settings
    size = page_size or settings.catalog_page_size
    base = settings.public_base_url.rstrip("/")
    datasets = await request.app.state.catalog_registry.collect(catalog.CatalogContext(conn=conn, base_url=base))
    p = catalog.Page(number=page, size=size, total=len(datasets))
    if page > p.last:
        raise ProblemError(404, "Not Found", f"page {page} does not exist; the last page is {p.last}")
    info = _info(settings, base)
    cache: RenderCache | None = getattr(request.app.state, "catalog_render_cache", None)
    if cache is None:
        cache = request.app.state.catalog_render_cache = RenderCache()
    key = (fmt, page, size, settings.catalog_page_size, info, tuple(datasets))
    entry = cache.get(key) or cache.put(
        key, catalog.serialize(catalog.build_graph(info, datasets, p, fmt, settings.catalog_page_size), fmt)
    )
    body, etag = entry
    headers = {"Vary": "Accept", "Cache-Control": "public, max-age=300", "ETag": etag}
    if _if_none_match(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=f"{FORMATS[fmt][0]}; charset=utf-8", headers=headers)


PageQ = Annotated[int, Query(ge=1, le=100_000, description="1-based page number (Hydra paging)")]
SizeQ = Annotated[int | None, Query(ge=1, le=1000, description="datasets per page (default from settings)")]


@router.api_route("/catalog", methods=["GET", "HEAD"], responses=_RDF_RESPONSES,
                  summary="DCAT-AP.de 3.0 catalog (Turtle, RDF/XML or JSON-LD by Accept)")
async def get_catalog(request: Request, conn: Connection, page: PageQ = 1, page_size: SizeQ = None) -> Response:
    fmt = negotiate(request.headers.get("accept"))
    if fmt is None:
        raise ProblemError(406, "Not Acceptable", "offered: " + ", ".join(m for m, _ in FORMATS.values()))
    return await _render(request, conn, fmt, page, page_size)


@router.api_route("/catalog.{suffix}", methods=["GET", "HEAD"], responses=_RDF_RESPONSES,
                  summary="DCAT-AP.de 3.0 catalog in the format of the suffix (ttl, rdf, jsonld)")
async def get_catalog_suffix(request: Request, conn: Connection, suffix: str, page: PageQ = 1,
                             page_size: SizeQ = None) -> Response:
    fmt = SUFFIXES.get(suffix)
    if fmt is None:
        raise ProblemError(404, "Not Found", f"unknown catalog suffix {suffix!r}; use ttl, rdf or jsonld")
    return await _render(request, conn, fmt, page, page_size)


@router.api_route("/catalog/datasets/{dataset_id}", methods=["GET", "HEAD"], responses=_RDF_RESPONSES,
                  summary="One dataset of the catalog (its IRI dereferenced; format by Accept)")
async def get_dataset(request: Request, conn: Connection, dataset_id: str) -> Response:
    fmt = negotiate(request.headers.get("accept"))
    if fmt is None:
        raise ProblemError(406, "Not Acceptable", "offered: " + ", ".join(m for m, _ in FORMATS.values()))
    settings = request.app.state.settings
    base = settings.public_base_url.rstrip("/")
    datasets = await request.app.state.catalog_registry.collect(catalog.CatalogContext(conn=conn, base_url=base))
    found = next((d for d in datasets if d.id == dataset_id), None)
    if found is None:
        raise ProblemError(404, "Not Found", f"no dataset {dataset_id!r} in the catalog")
    body = catalog.serialize(catalog.build_dataset_graph(_info(settings, base), found), fmt)
    return Response(body, media_type=f"{FORMATS[fmt][0]}; charset=utf-8",
                    headers={"Vary": "Accept", "Cache-Control": "public, max-age=300"})
