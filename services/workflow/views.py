"""Server-rendered German clerk view (placeholder router, filled in below)."""

from __future__ import annotations

from fastapi import APIRouter

views = APIRouter()
