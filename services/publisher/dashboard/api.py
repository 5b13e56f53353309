"""HTTP adapter of the German dashboard: `/dashboard` (Hessen overview) and `/dashboard/{ags}` (one city)."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.staticfiles import StaticFiles

from services.publisher.dashboard import service as view
from services.publisher.kpis.service import today_berlin
from shared import ckm
from shared.db import Conn
from shared.http import Connection, ProblemError
from shared.reference import municipalities, municipality_by_ags, service_by_key

HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=HERE / "templates")
templates.env.globals.update(fmt_cell=view.fmt_cell, chart_summary=view.summary)
static_files = StaticFiles(directory=HERE / "static")

router = APIRouter(tags=["dashboard"])
EARLIEST, LATEST = date(2000, 1, 1), date(2099, 12, 31)

ServiceQ = Annotated[str | None, Query(pattern=r"^\d{14}$", description="LeiKa key; default: the busiest one")]
PeriodQ = Annotated[Literal["day", "month"], Query(description="day or month")]
FromQ = Annotated[date | None, Query(alias="from", description="first day (Europe/Berlin)")]
ToQ = Annotated[date | None, Query(alias="to", description="last day (Europe/Berlin), inclusive")]


def _bad(detail: str, param: str) -> ProblemError:
    return ProblemError(400, "Bad Request", detail, parameter=param)


def _range(period: str, date_from: date | None, date_to: date | None) -> tuple[date, date]:
    to = date_to or today_berlin()
    return (date_from or to - timedelta(days=29 if period == "day" else 364)), to


def _context(request: Request, page: view.Page, current: str, **extra: Any) -> dict[str, Any]:
    base = ""  # page links are root-relative, so the page works behind any proxy path mapping of the host
    f = page.filters
    svc = service_by_key().get(f.service)
    return {
        "page": page, "page_title": page.title, "base_url": base, "static_url": f"{base}/static",
        "municipalities": municipalities(), "current": current, "k": ckm.MAX_DEVIATION,
        "service_name": svc.name_de if svc else f.service,
        "nav_query": view.Filters(None, f.service, f.period, f.date_from, f.date_to).query(),
        **extra,
    }


async def _filters(
    request: Request, conn: Conn, ags: str | None, service: str | None, period: Literal["day", "month"],
    date_from: date | None, date_to: date | None,
) -> view.Filters:
    for name, d in (("from", date_from), ("to", date_to)):
        if d is not None and not EARLIEST <= d <= LATEST:
            raise _bad(f"'{name}' must lie between {EARLIEST} and {LATEST}", name)
    start, end = _range(period, date_from, date_to)
    if start > end:
        raise _bad("'from' must not be after 'to'", "from")
    if (end - start).days > request.app.state.settings.max_day_range_days:
        raise _bad(f"range longer than {request.app.state.settings.max_day_range_days} days", "from")
    f = view.Filters(ags, service or "", period, start, end)
    if service is None:
        busiest = await view.busiest_service(conn, ags, f)
        f = view.Filters(ags, busiest or view.service_options()[0][0], period, start, end)
    return f


@router.get("/dashboard", response_class=HTMLResponse, summary="Dashboard: Hessen overview (German)")
async def hessen(
    request: Request, conn: Connection, service: ServiceQ = None, period: PeriodQ = "day", date_from: FromQ = None,
    date_to: ToQ = None,
) -> Response:
    f = await _filters(request, conn, None, service, period, date_from, date_to)
    page = await view.hessen_page(conn, f, "")
    return templates.TemplateResponse(request, "hessen.html", _context(request, page, "hessen"))


@router.get("/dashboard/{ags}", response_class=HTMLResponse, summary="Dashboard: one municipality (German)")
async def municipality(
    request: Request, conn: Connection, ags: str, service: ServiceQ = None, period: PeriodQ = "day",
    date_from: FromQ = None, date_to: ToQ = None,
) -> Response:
    m = municipality_by_ags().get(ags)
    if m is None:
        page = view.Page("Seite nicht gefunden", view.Filters(None, "", "day", *_range("day", None, None)), [],
                         view.service_options(), False)
        return templates.TemplateResponse(
            request, "not_found.html",
            _context(request, page, "", message=f"Zum Gemeindeschlüssel {ags} gibt es keine Seite."),
            status_code=404,
        )
    f = await _filters(request, conn, ags, service, period, date_from, date_to)
    page = await view.municipality_page(conn, m, f, "")
    return templates.TemplateResponse(request, "municipality.html", _context(request, page, m.ags, ags=m.ags))
