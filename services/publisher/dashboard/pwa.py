"""Open Smart City app: the portal and dashboards as an installable web app (manifest, service worker,
"Meine Kommune" start page). Pages only; the KPIs and datasets come from the public APIs in the browser."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.templating import Jinja2Templates

from services.publisher.portal.ckan import org_name
from shared.reference import municipalities, municipality_by_ags

HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=HERE / "templates")
SERVICE_WORKER = (HERE / "static" / "app" / "sw.js").read_bytes()
router = APIRouter(tags=["app"])

MANIFEST: dict[str, Any] = {
    "name": "Kommunal-Pulse: Meine Kommune", "short_name": "Meine Kommune", "lang": "de",
    "description": "Kennzahlen der Online-Dienste und offene Daten der hessischen Kommunen.",
    "id": "/app", "start_url": "/app", "scope": "/", "display": "standalone",
    "background_color": "#ffffff", "theme_color": "#00607a",
    "icons": [{"src": "/static/app/icon-192.png", "sizes": "192x192", "type": "image/png", "purpose": "any"},
              {"src": "/static/app/icon-512.png", "sizes": "512x512", "type": "image/png", "purpose": "any"},
              {"src": "/static/app/icon-512.png", "sizes": "512x512", "type": "image/png", "purpose": "maskable"}],
}


@router.get("/app", response_class=HTMLResponse, summary="App: Meine Kommune (start page)")
async def start(request: Request) -> Response:
    return templates.TemplateResponse(request, "app.html", {"city": None, "municipalities": municipalities()})


@router.get("/app/{ags}", response_class=HTMLResponse, summary="App: one municipality")
async def city(request: Request, ags: str) -> Response:
    m = municipality_by_ags().get(ags)
    if m is None:
        return templates.TemplateResponse(request, "app.html", {"city": None, "municipalities": municipalities(),
                                                                "unknown": ags}, status_code=404)
    return templates.TemplateResponse(request, "app.html", {"city": m, "org": org_name(m),
                                                            "municipalities": municipalities()})


@router.get("/app.webmanifest", summary="Web app manifest")
async def manifest() -> JSONResponse:
    return JSONResponse(MANIFEST, media_type="application/manifest+json")


@router.get("/sw.js", summary="Service worker of the app (scope /)")
async def service_worker() -> Response:
    # Served from the root so that its scope covers the dashboards and the portal too.
    return Response(SERVICE_WORKER, media_type="text/javascript; charset=utf-8",
                    headers={"Cache-Control": "no-cache"})
