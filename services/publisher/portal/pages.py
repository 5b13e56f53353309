"""Server-rendered portal pages (German): search with facets and the dataset page."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, select_autoescape

from services.publisher.portal import service, vocab
from services.publisher.portal.repository import SearchQuery
from services.publisher.portal.schemas import SearchResult
from services.publisher.portal.validation import has_nul
from shared.http import Connection, ProblemError
from shared.reference import municipality_by_ags

router = APIRouter(tags=["portal pages"], include_in_schema=False)

_env = Environment(loader=PackageLoader("services.publisher.portal", "templates"),
                   autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)
PAGE_SIZE = 20
SORTS = (("relevance", "Relevanz"), ("date", "Neueste zuerst"), ("title", "Titel (A bis Z)"))
# (query parameter, facet key, heading)
FACET_PARAMS = (("kommune", "municipality", "Kommune"), ("thema", "theme", "Kategorie"),
                ("format", "format", "Format"), ("lizenz", "licence", "Lizenz"))


def _filesize(n: int) -> str:
    if n < 1024:
        return f"{n} Byte"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KB".replace(".", ",")
    return f"{n / 1024 / 1024:.1f} MB".replace(".", ",")


def _municipality_name(ags: str) -> str:
    m = municipality_by_ags().get(ags)
    return m.name if m else ags


_env.globals.update(format_label=vocab.format_label, filesize=_filesize, municipality_name=_municipality_name)


def _render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    base = str(request.app.state.settings.public_base_url).rstrip("/")
    html = _env.get_template(template).render(base=base, **context)
    return HTMLResponse(html, status_code=status)


def _href(base: str, params: list[tuple[str, str]]) -> str:
    return f"{base}/portal" + (f"?{urlencode(params)}" if params else "")


def _facet_view(base: str, params: list[tuple[str, str]], result: SearchResult) -> list[dict[str, Any]]:
    """Each facet value as a link that toggles it in the current query (page reset to 1)."""
    kept = [(k, v) for k, v in params if k != "seite"]
    out = []
    for param, key, title in FACET_PARAMS:
        items = []
        for item in result.facets.get(key, []):
            active = (param, item.value) in kept
            toggled = [p for p in kept if p != (param, item.value)] if active else [*kept, (param, item.value)]
            items.append({"label": item.label, "count": item.count, "active": active, "href": _href(base, toggled)})
        out.append({"param": param, "title": title, "entries": items})
    return out


@router.get("/portal", response_class=HTMLResponse)
async def search_page(
    request: Request, conn: Connection,
    q: Annotated[str | None, Query(max_length=500)] = None,
    kommune: Annotated[list[str] | None, Query()] = None,
    thema: Annotated[list[str] | None, Query()] = None,
    format: Annotated[list[str] | None, Query()] = None,
    lizenz: Annotated[list[str] | None, Query()] = None,
    sort: Literal["relevance", "date", "title"] = "relevance",
    seite: Annotated[int, Query(ge=1, le=10_000)] = 1,
) -> HTMLResponse:
    base = str(request.app.state.settings.public_base_url).rstrip("/")
    if has_nul(*(v for _, v in request.query_params.multi_items())):
        return _render(request, "gone.html", status=400, heading="Ungültige Anfrage",
                       message="Die Suchanfrage enthält unzulässige Steuerzeichen.")
    text = (q or "").strip() or None
    query = SearchQuery(text=text, municipalities=kommune or [], themes=thema or [], formats=format or [],
                        licences=lizenz or [], sort=sort)
    result = await service.search(conn, query, seite, PAGE_SIZE, base)
    filters = [(p, v) for p, vals in (("kommune", kommune), ("thema", thema), ("format", format),
                                      ("lizenz", lizenz)) for v in (vals or [])]
    params = ([("q", text)] if text else []) + filters + ([("sort", sort)] if sort != "relevance" else [])
    pages = max(1, math.ceil(result.count / PAGE_SIZE))
    return _render(
        request, "search.html", q=text, sort=sort, sorts=SORTS, result=result, pages=pages,
        hidden=filters, any_filter=bool(filters), facets=_facet_view(base, params, result),
        prev_href=_href(base, [*params, ("seite", str(seite - 1))]) if seite > 1 else None,
        next_href=_href(base, [*params, ("seite", str(seite + 1))]) if seite < pages else None,
    )


@router.get("/portal/datensaetze/{name}", response_class=HTMLResponse)
async def dataset_page(request: Request, conn: Connection, name: str) -> HTMLResponse:
    base = str(request.app.state.settings.public_base_url).rstrip("/")
    if has_nul(name):
        return _render(request, "gone.html", status=404, heading="Datensatz nicht gefunden",
                       message="Diesen Datensatz gibt es nicht.")
    try:
        d = await service.get(conn, name, base)
    except ProblemError as p:
        heading = "Datensatz zurückgezogen" if p.status == 410 else "Datensatz nicht gefunden"
        message = ("Die Kommune hat diesen Datensatz zurückgezogen. Frühere Fassungen bleiben in der "
                   "Versionsgeschichte erhalten." if p.status == 410 else
                   f"Es gibt keinen Datensatz mit dem Namen „{name}“.")
        return _render(request, "gone.html", status=p.status, heading=heading, message=message)
    previews = []
    for r in d.distributions:
        if r.file and r.format == "CSV":
            preview = await service.csv_preview(conn, r.file.id)
            if preview:
                previews.append({"title": r.title or r.file.filename, "header": preview.header,
                                 "rows": preview.rows, "report": preview.report})
    return _render(
        request, "dataset.html", d=d, municipality=municipality_by_ags()[d.municipality], previews=previews,
        themes=[vocab.THEMES.get(t, t) for t in d.themes], licence=vocab.LICENCES.get(d.licence, d.licence),
        frequency=vocab.FREQUENCIES.get(d.frequency, d.frequency),
    )
