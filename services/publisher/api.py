"""HTTP adapter of the open-data API."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Query, Request

from services.publisher import repository, service
from services.publisher.schemas import EventCounts

router = APIRouter()


@router.get("/v1/kpis", response_model=EventCounts, summary="Usage event counts per day")
async def get_kpis(
    request: Request,
    municipality: Annotated[str | None, Query(pattern=r"^\d{8}$", description="AGS")] = None,
    service_key: Annotated[str | None, Query(alias="service", pattern=r"^\d{14}$", description="LeiKa key")] = None,
    date_from: Annotated[date | None, Query(alias="from")] = None,
    date_to: Annotated[date | None, Query(alias="to")] = None,
) -> EventCounts:
    async with request.app.state.pool.acquire() as conn:
        rows = await repository.event_counts(
            conn, municipality, service_key, date_from, date_to, request.app.state.settings.max_page_size
        )
    return service.to_event_counts(rows)
