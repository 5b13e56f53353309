"""HTTP adapter of the workflow service (case inspection)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import APIRouter, HTTPException, Request

from services.workflow import repository

router = APIRouter()


@router.get("/v1/cases/{case_id}", summary="Case state")
async def get_case(case_id: UUID, request: Request) -> dict[str, Any]:
    async with request.app.state.pool.acquire() as conn:
        row = await repository.get_case(conn, case_id)
    if row is None:
        raise HTTPException(404, "case not found")
    return dict(row)
