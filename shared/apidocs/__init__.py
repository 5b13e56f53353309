"""Swagger UI for every service from assets the service serves itself: the API docs work without internet.

The assets in `static/` are copied from the npm package `swagger-ui-dist` (version pinned in package.json;
`tests/unit/test_apidocs.py` holds the copy to it). Build each app with `docs_url=None, redoc_url=None` and call
`install_api_docs`.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parent / "static"
ASSETS = "/api-docs-assets"
ASSET_FILES = ("swagger-ui-bundle.js", "swagger-ui.css")


def install_api_docs(app: FastAPI, path: str = "/docs") -> None:
    """Serve Swagger UI at `path` with its JavaScript, CSS and icon from this service (no CDN, no validator)."""
    app.mount(ASSETS, StaticFiles(directory=STATIC), name="api-docs-assets")

    @app.get(path, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = str(request.scope.get("root_path", "")).rstrip("/")
        assert app.openapi_url is not None
        return get_swagger_ui_html(
            openapi_url=root + app.openapi_url, title=f"API: {app.title}",
            swagger_js_url=f"{root}{ASSETS}/swagger-ui-bundle.js", swagger_css_url=f"{root}{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS}/favicon-32x32.png",
            # The default validator badge would send the document's URL to validator.swagger.io.
            swagger_ui_parameters={"validatorUrl": None},
        )
