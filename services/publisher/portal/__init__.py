"""Open Smart City data portal: registry of the municipalities' own datasets, search, CKAN API, pages."""

from __future__ import annotations

from fastapi import FastAPI


def install(app: FastAPI) -> None:
    """Mount the portal's routes and add its datasets to the catalog (when the app has one)."""
    from services.publisher.portal import api, catalog, pages

    app.include_router(api.router)
    app.include_router(api.ckan_router)
    app.include_router(pages.router)
    registry = getattr(app.state, "catalog_registry", None)
    if registry is not None:
        catalog.register(registry)
