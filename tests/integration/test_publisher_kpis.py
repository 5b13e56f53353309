"""The computed KPI path of the open-data API (epoch rows from PostgreSQL, services/publisher/kpis/service.py)
against an independent plain computation (tests/kpi_reference.py, datetime rows as PostgreSQL returns them) on
the real database: the same tables from the same stored rows, and for random queries the same JSON items and
totals, which KpiPage and TotalsPage validate."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from asgi_lifespan import LifespanManager

from services.publisher.app import create_app
from services.publisher.kpis import repository, service
from services.publisher.kpis.api import VersionedCache
from services.publisher.kpis.definitions import FAMILIES, STORED_COUNTS
from services.publisher.kpis.schemas import KpiPage, TotalsPage
from services.publisher.settings import PublisherSettings
from tests import kpi_reference as reference
from tests.waiting import eventually

FIELDS = ("municipality", "service", "periods", "cells", "raw", "hidden", "by_period")
DIMS = {"feedback": ("1", "3", "5"), "duration_le": ("60", "300", "inf"), "processing_le": ("3600", "86400"),
        "payment": ("paypal", "sepa_lastschrift"), "page_views": ("/start", "/formular"), "step_completed": ("1", "2")}
# 2026-03-01 .. 2026-04-05 Europe/Berlin: the spring DST switch inside
FIRST_DAY = datetime(2026, 2, 28, 23, tzinfo=UTC)


def _ags() -> str:
    return "99" + f"{uuid.uuid4().int % 10**6:06d}"


def _leika() -> str:
    return "99" + f"{uuid.uuid4().int % 10**12:012d}"


def _starts(granularity: str) -> list[datetime]:
    berlin = service.BERLIN
    if granularity == "hour":
        return [datetime(2026, 3, 28, 23, tzinfo=UTC) + timedelta(hours=h) for h in range(30)]
    if granularity == "day":
        return [datetime.combine(date(2026, 3, 1) + timedelta(days=d), datetime.min.time(), berlin)
                for d in range(36)]
    return [datetime(2026, m, 1, tzinfo=berlin) for m in (1, 2, 3, 4)]


@pytest.fixture
async def stored(db: asyncpg.Connection) -> tuple[list[str], list[str]]:
    """Random rows of two municipalities x two services in hours, days and months (key sums as stored)."""
    rng = random.Random(1717)
    munis, svcs = [_ags(), _ags()], [_leika(), _leika()]
    metrics = [*sorted(STORED_COUNTS), "payment_amount_cents"]
    rows = []
    for granularity in ("hour", "day", "month"):
        for start in _starts(granularity):
            for muni in munis:
                for svc in svcs:
                    for metric in rng.sample(metrics, 8):
                        for dim in DIMS.get(metric, ("",)):
                            rows.append((granularity, start, muni, svc, metric, dim,
                                         rng.choice((0, 1, 2, 3, rng.randint(4, 500))), rng.getrandbits(32)))
    await db.copy_records_to_table(
        "kpi_values", records=rows,
        columns=["granularity", "period_start", "municipality", "service", "metric", "dimension", "value", "key_sum"])
    return munis, svcs


@pytest.fixture
async def client(database_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    application = create_app(PublisherSettings(database_url=database_url, environment="test"))
    async with LifespanManager(application, startup_timeout=60, shutdown_timeout=60) as manager:
        await eventually(lambda: _live(application), bool, timeout=30)
        application.state.tables = VersionedCache(0)  # every request computed
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url="http://test") as c:
            yield c, application


async def _live(app: Any) -> bool:
    return bool(app.state.changes.live)


def _queries(munis: list[str], svcs: list[str], n: int) -> list[dict[str, Any]]:
    rng = random.Random(n)
    out = []
    for _ in range(n):
        period = rng.choice(("hour", "day", "month"))
        first = date(2026, 3, 1) + timedelta(days=rng.randint(0, 34) if period != "hour" else 28)
        last = first + timedelta(days=rng.randint(0, 1 if period == "hour" else 20))
        params: dict[str, Any] = {"period": period, "from": first.isoformat(), "to": last.isoformat(),
                                  "municipality": rng.sample(munis, rng.randint(1, 2)),
                                  "service": rng.sample(svcs, rng.randint(1, 2))}
        if rng.random() < 0.4:
            params["family"] = rng.sample(FAMILIES, rng.randint(1, 3))
        out.append(params)
    return out


def _query(params: dict[str, Any]) -> service.KpiQuery:
    fams = tuple(f for f in FAMILIES if f in params.get("family", FAMILIES))
    return service.KpiQuery(tuple(sorted(params["municipality"])), tuple(sorted(params["service"])),
                            params["period"], date.fromisoformat(params["from"]), date.fromisoformat(params["to"]),
                            fams)


async def _expected(db: asyncpg.Connection, q: service.KpiQuery) -> list[service.Table]:
    """The reference tables of datetime rows, selected on their own (not through the repository)."""
    start, end = q.bounds()
    rows = await db.fetch(
        """SELECT municipality::text, service::text, period_start, metric, dimension, value, key_sum
           FROM kpi_values
           WHERE granularity = $1 AND period_start >= $2 AND period_start < $3
             AND municipality = ANY($4::text[]::char(8)[]) AND service = ANY($5::text[]::char(14)[])""",
        q.period, start, end, list(q.municipalities), list(q.services))
    return reference.build_tables(rows)


async def test_epoch_rows_give_the_tables_of_datetime_rows(
    db: asyncpg.Connection, stored: tuple[list[str], list[str]]
) -> None:
    munis, svcs = stored
    for params in _queries(munis, svcs, 12):
        q = _query(params)
        start, end = q.bounds()
        fast = service.build_tables(await repository.kpi_rows(
            db, q.period, start, end, list(q.municipalities), list(q.services)))
        typed = await _expected(db, q)
        assert [[getattr(t, f) for f in FIELDS] for t in fast] == [[getattr(t, f) for f in FIELDS] for t in typed]
        assert typed, params


async def test_computed_json_equals_the_reference_for_random_queries(
    db: asyncpg.Connection, stored: tuple[list[str], list[str]], client: tuple[httpx.AsyncClient, Any]
) -> None:
    http, _ = client
    munis, svcs = stored
    for params in _queries(munis, svcs, 30):
        q = _query(params)
        typed = await _expected(db, q)
        cells = reference.kpi_cells(typed, q.families)
        totals = reference.total_cells(typed, q.families)
        r = await http.get("/v1/kpis", params={**params, "limit": 10_000})
        assert r.status_code == 200, r.text
        page = KpiPage.model_validate(r.json())
        assert page.total_items == len(cells)
        assert orjson.dumps(r.json()["items"]) == orjson.dumps([
            {"period": q.period, "period_start": c[0], "municipality": c[1], "service": c[2], "metric": c[3],
             "dimension": c[4], "value": c[5], "suppressed": c[6]} for c in cells])
        r = await http.get("/v1/kpis/totals", params={**params, "limit": 10_000})
        assert r.status_code == 200, r.text
        assert TotalsPage.model_validate(r.json()).total_items == len(totals)
        assert orjson.dumps(r.json()["items"]) == orjson.dumps([
            {"municipality": c[1], "service": c[2], "metric": c[3], "dimension": c[4], "value": c[5],
             "suppressed": c[6]} for c in totals])
