"""Open-data API against the real PostgreSQL: hand-checked KPI values in JSON and CSV, perturbation, caching."""

from __future__ import annotations

import csv
import io
import random
import uuid
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from services.publisher.app import create_app
from services.publisher.settings import PublisherSettings
from shared import ckm
from tests.waiting import eventually

DAY1 = datetime(2026, 2, 28, 23, tzinfo=UTC)  # 2026-03-01 00:00 Europe/Berlin
DAY2 = datetime(2026, 3, 1, 23, tzinfo=UTC)
DAY1_LOCAL, DAY2_LOCAL = "2026-03-01T00:00:00+01:00", "2026-03-02T00:00:00+01:00"


def random_ags() -> str:
    return "99" + f"{uuid.uuid4().int % 10**6:06d}"


def random_leika() -> str:
    return "99" + f"{uuid.uuid4().int % 10**12:012d}"


Row = tuple[datetime, str, str, str, str, int]
Keyed = dict[tuple[datetime, str, str], tuple[int, int]]
"""(period start, metric, dimension) -> (true count, key sum) as stored."""


async def insert(db: asyncpg.Connection, granularity: str, rows: list[Row]) -> Keyed:
    """Store rows with random key sums (as the aggregator would); return what was stored per cell."""
    keyed = [(granularity, *r, random.getrandbits(32)) for r in rows]
    await db.executemany(
        """INSERT INTO kpi_values (granularity, period_start, municipality, service, metric, dimension, value,
                                   key_sum)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
        keyed,
    )
    return {(r[1], r[4], r[5]): (r[6], r[7]) for r in keyed}


def perturbed(stored: Keyed, cells: Iterable[tuple[datetime, str, str]]) -> int:
    """What the API must publish for the union of `cells`: the true sum perturbed at the summed key."""
    parts = [stored[c] for c in cells if c in stored]
    return ckm.perturb(sum(v for v, _ in parts), ckm.cell_key([k for _, k in parts]))


@pytest.fixture
async def served(database_url: str) -> AsyncIterator[tuple[FastAPI, Any]]:
    """The app (for its state) and the ASGI callable with its lifespan running."""
    application = create_app(PublisherSettings(database_url=database_url, environment="test"))
    async with LifespanManager(application, startup_timeout=60, shutdown_timeout=60) as manager:
        await eventually(lambda: _live(application), bool, timeout=30)
        yield application, manager.app


@pytest.fixture
def app(served: tuple[FastAPI, Any]) -> FastAPI:
    return served[0]


async def _live(app: FastAPI) -> bool:
    return bool(app.state.changes.live)


@pytest.fixture
async def client(served: tuple[FastAPI, Any]) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=served[1]), base_url="http://test") as c:
        yield c


@pytest.fixture
async def funnel(db: asyncpg.Connection) -> tuple[str, str, Keyed]:
    """Two days of one municipality x service, values chosen by hand."""
    ags, svc = random_ags(), random_leika()
    day1 = [
        ("sessions_started", "", 40), ("channel", "web", 30), ("channel", "app", 10), ("device", "desktop", 25),
        ("device", "mobile", 15), ("sessions_submitted", "", 20), ("sessions_abandoned", "", 12),
        ("abandoned_after_step", "0", 6), ("abandoned_after_step", "1", 6), ("feedback", "4", 10),
        ("feedback", "5", 10), ("duration_le", "60", 10), ("duration_le", "120", 10), ("payment", "paypal", 12),
        ("payment", "sepa_lastschrift", 8),
    ]
    day2 = [
        ("sessions_started", "", 30), ("channel", "web", 30), ("device", "desktop", 30),
        ("sessions_submitted", "", 15), ("sessions_abandoned", "", 10), ("abandoned_after_step", "2", 10),
        ("payment", "paypal", 2), ("payment", "sepa_lastschrift", 13),
    ]
    rows = [(DAY1, ags, svc, m, d, v) for m, d, v in day1] + [(DAY2, ags, svc, m, d, v) for m, d, v in day2]
    return ags, svc, await insert(db, "day", rows)


def _by(items: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {(i.get("period_start", "total"), i["metric"], i["dimension"]): i for i in items}


class TestKpiQuery:
    async def test_json_gives_the_hand_checked_counts_and_derived_values(
        self, client: httpx.AsyncClient, funnel: tuple[str, str, Keyed]
    ) -> None:
        ags, svc, stored = funnel
        r = await client.get("/v1/kpis", params={"municipality": ags, "service": svc, "period": "day",
                                                 "from": "2026-03-01", "to": "2026-03-02"})
        assert r.status_code == 200, r.text
        body = r.json()
        got = _by(body["items"])

        def count(day: datetime, metric: str, dim: str = "") -> int:
            return perturbed(stored, [(day, metric, dim)])

        for (day, metric, dim), (true, _) in stored.items():
            # a count perturbed to 0 is left out, like a true 0
            value = got.get((DAY1_LOCAL if day == DAY1 else DAY2_LOCAL, metric, dim), {"value": 0})["value"]
            assert value == count(day, metric, dim)
            assert abs(value - true) <= ckm.MAX_DEVIATION
        # rates, means and percentiles from the published (perturbed) counts, by the documented formulas
        started, submitted = count(DAY1, "sessions_started"), count(DAY1, "sessions_submitted")
        assert got[(DAY1_LOCAL, "conversion_rate", "")]["value"] == round(submitted / started, 4)
        assert got[(DAY2_LOCAL, "abandonment_rate", "")]["value"] == round(
            count(DAY2, "sessions_abandoned") / count(DAY2, "sessions_started"), 4)
        four, five = count(DAY1, "feedback", "4"), count(DAY1, "feedback", "5")
        assert got[(DAY1_LOCAL, "mean_stars", "")]["value"] == round((4 * four + 5 * five) / (four + five), 2)
        # the ratings count is a cell of its own: all ratings of the day, at the sum of their keys
        assert got[(DAY1_LOCAL, "feedback_count", "")]["value"] == perturbed(
            stored, [(DAY1, "feedback", "4"), (DAY1, "feedback", "5")])
        b60, b120 = count(DAY1, "duration_le", "60"), count(DAY1, "duration_le", "120")
        n = b60 + b120
        p50 = 60 * 0.5 * n / b60 if 0.5 * n <= b60 else 60 + 60 * (0.5 * n - b60) / b120
        assert got[(DAY1_LOCAL, "duration_p50_s", "")]["value"] == round(p50, 1)
        assert body["perturbation"]["method"] == "cell_key_method"
        assert not any(i["suppressed"] for i in body["items"])
        assert body["total_items"] == len(body["items"])
        assert body["query"]["municipality"] == [ags]
        assert all(i["municipality"] == ags and i["period"] == "day" for i in body["items"])

    async def test_csv_has_the_same_values_in_stable_columns(
        self, client: httpx.AsyncClient, funnel: tuple[str, str, Keyed]
    ) -> None:
        ags, svc, _ = funnel
        params = {"municipality": ags, "service": svc, "from": "2026-03-01", "to": "2026-03-02"}
        as_json = (await client.get("/v1/kpis.json", params=params)).json()["items"]
        r = await client.get("/v1/kpis", params=params, headers={"Accept": "text/csv"})
        assert r.headers["content-type"].startswith("text/csv")
        assert r.content.count(b"\r\n") == len(as_json) + 1
        rows = list(csv.reader(io.StringIO(r.content.decode("utf-8"))))
        assert rows[0] == ["period", "period_start", "municipality", "service", "metric", "dimension", "value"]
        assert len(rows) == len(as_json) + 1
        for row, item in zip(rows[1:], as_json, strict=True):
            assert row[1:6] == [item["period_start"], item["municipality"], item["service"], item["metric"],
                                item["dimension"]]
            assert row[6] == str(item["value"])
        assert (await client.get("/v1/kpis.csv", params=params)).content == r.content

    async def test_family_filter_and_pagination_keep_a_stable_order(
        self, client: httpx.AsyncClient, funnel: tuple[str, str, Keyed]
    ) -> None:
        ags, svc, _ = funnel
        params: dict[str, Any] = {"municipality": ags, "service": svc, "from": "2026-03-01", "to": "2026-03-02",
                                  "family": "payment"}
        full = (await client.get("/v1/kpis", params=params)).json()
        assert {i["metric"] for i in full["items"]} == {"payment"}
        pages, url = [], "/v1/kpis"
        first = await client.get(url, params={**params, "limit": 3})
        page = first.json()
        pages.extend(page["items"])
        while page["next"]:
            page = (await client.get(page["next"])).json()
            pages.extend(page["items"])
        assert pages == full["items"]

    async def test_month_periods_start_on_the_first_in_berlin(
        self, client: httpx.AsyncClient, db: asyncpg.Connection
    ) -> None:
        ags, svc = random_ags(), random_leika()
        stored = await insert(db, "month", [(DAY1, ags, svc, "sessions_started", "", 90)])
        r = await client.get("/v1/kpis", params={"municipality": ags, "period": "month", "from": "2026-03-15",
                                                 "to": "2026-03-20", "family": "usage"})
        assert [(i["period_start"], i["value"]) for i in r.json()["items"]] == [
            (DAY1_LOCAL, perturbed(stored, stored))]


    async def test_hours_across_the_spring_dst_switch_keep_their_berlin_offsets(
        self, client: httpx.AsyncClient, db: asyncpg.Connection
    ) -> None:
        ags, svc = random_ags(), random_leika()
        hours = [datetime(2026, 3, 28, 22, tzinfo=UTC), datetime(2026, 3, 28, 23, tzinfo=UTC),
                 datetime(2026, 3, 29, 0, tzinfo=UTC), datetime(2026, 3, 29, 1, tzinfo=UTC),
                 datetime(2026, 3, 29, 22, tzinfo=UTC)]
        stored = await insert(db, "hour", [(h, ags, svc, "sessions_started", "", 10 + i)
                                           for i, h in enumerate(hours)])
        r = await client.get("/v1/kpis", params={"municipality": ags, "period": "hour", "from": "2026-03-29",
                                                 "to": "2026-03-29", "family": "usage"})
        # 2026-03-29 in Berlin runs from 23:00 UTC the day before to 22:00 UTC; 02:00 local does not exist
        assert [(i["period_start"], i["value"]) for i in r.json()["items"]] == [
            ("2026-03-29T00:00:00+01:00", perturbed(stored, [(hours[1], "sessions_started", "")])),
            ("2026-03-29T01:00:00+01:00", perturbed(stored, [(hours[2], "sessions_started", "")])),
            ("2026-03-29T03:00:00+02:00", perturbed(stored, [(hours[3], "sessions_started", "")])),
        ]


class TestPerturbation:
    async def test_totals_are_cells_of_their_own_and_small_counts_are_published_perturbed(
        self, client: httpx.AsyncClient, funnel: tuple[str, str, Keyed]
    ) -> None:
        ags, svc, stored = funnel
        params = {"municipality": ags, "service": svc, "from": "2026-03-01", "to": "2026-03-02",
                  "family": "payment"}
        got = _by((await client.get("/v1/kpis", params=params)).json()["items"])
        # day 2 paypal = 2: published, as its perturbed value
        small = got.get((DAY2_LOCAL, "payment", "paypal"), {"value": 0, "suppressed": False})
        assert small["value"] == perturbed(stored, [(DAY2, "payment", "paypal")])
        assert small["suppressed"] is False
        totals = _by((await client.get("/v1/kpis/totals", params=params)).json()["items"])
        # the paypal total (12 + 2) is perturbed at the sum of both days' keys, not summed from the days
        assert totals[("total", "payment", "paypal")]["value"] == perturbed(
            stored, [(DAY1, "payment", "paypal"), (DAY2, "payment", "paypal")])
        one_day = {**params, "to": "2026-03-01"}
        single = _by((await client.get("/v1/kpis/totals", params=one_day)).json()["items"])
        assert single[("total", "payment", "paypal")]["value"] == got[(DAY1_LOCAL, "payment", "paypal")]["value"]


class TestCaching:
    async def test_if_none_match_gets_304_without_the_database_until_data_changes(
        self, app: FastAPI, client: httpx.AsyncClient, funnel: tuple[str, str, Keyed], db: asyncpg.Connection
    ) -> None:
        ags, svc, _ = funnel
        params = {"municipality": ags, "service": svc, "from": "2026-03-01", "to": "2026-03-02"}
        first = await client.get("/v1/kpis", params=params)
        etag = first.headers["etag"]
        assert etag.startswith('"')
        assert not etag.startswith("W/")
        assert "public" in first.headers["cache-control"]
        assert "max-age=" in first.headers["cache-control"]
        assert first.headers["last-modified"].endswith("GMT")
        pool = app.state.pool

        class NoDatabase:
            def acquire(self) -> None:
                raise AssertionError("the 304 path must not touch the database")

        app.state.pool = NoDatabase()
        try:
            again = await client.get("/v1/kpis", params=params, headers={"If-None-Match": etag})
        finally:
            app.state.pool = pool
        assert again.status_code == 304
        assert again.headers["etag"] == etag
        assert again.content == b""

        await insert(db, "day", [(DAY2, ags, svc, "cases_opened", "", 50)])

        async def status() -> int:
            return (await client.get("/v1/kpis", params=params, headers={"If-None-Match": etag})).status_code

        assert await eventually(status, lambda s: s == 200, timeout=10) == 200
        changed = await client.get("/v1/kpis", params=params)
        assert changed.headers["etag"] != etag
        assert any(i["metric"] == "cases_opened" for i in changed.json()["items"])

    async def test_representations_have_different_etags_and_large_ones_are_gzipped(
        self, client: httpx.AsyncClient, funnel: tuple[str, str, Keyed]
    ) -> None:
        ags, svc, _ = funnel
        params = {"municipality": ags, "service": svc, "from": "2026-03-01", "to": "2026-03-02"}
        j = await client.get("/v1/kpis", params=params, headers={"Accept-Encoding": "gzip"})
        c = await client.get("/v1/kpis.csv", params=params, headers={"Accept-Encoding": "gzip"})
        plain = await client.get("/v1/kpis", params=params, headers={"Accept-Encoding": "identity"})
        assert j.headers["content-encoding"] == "gzip"
        assert "content-encoding" not in plain.headers
        assert len({j.headers["etag"], c.headers["etag"], plain.headers["etag"]}) == 3
        assert j.json() == plain.json()

    async def test_cors_is_open_for_get(self, client: httpx.AsyncClient) -> None:
        r = await client.get("/v1/municipalities", headers={"Origin": "https://example.org"})
        assert r.headers["access-control-allow-origin"] == "*"
        assert "etag" in r.headers["access-control-expose-headers"].lower()


class TestBadParameters:
    @pytest.mark.parametrize(("params", "name"), [
        ({"municipality": "123"}, "municipality"),
        ({"service": "abc"}, "service"),
        ({"period": "week"}, "period"),
        ({"from": "2026-13-01"}, "from"),
        ({"from": "2026-03-05", "to": "2026-03-01"}, "from"),
        ({"family": "weather"}, "family"),
        ({"period": "hour", "from": "2026-01-01", "to": "2026-03-01"}, "to"),
        ({"limit": "0"}, "limit"),
        ({"from": "1000-01-01"}, "from"),
    ])
    async def test_problem_details_name_the_parameter(
        self, client: httpx.AsyncClient, params: dict[str, str], name: str
    ) -> None:
        r = await client.get("/v1/kpis", params=params)
        assert r.status_code in (400, 422)
        assert r.headers["content-type"] == "application/problem+json"
        body = r.json()
        assert body["status"] == r.status_code
        assert name in [p["name"] for p in body["invalid-params"]]

    @pytest.mark.parametrize(("accept", "media_type"), [
        ("text/csv", "text/csv"), ("*/*;q=0.1, text/csv", "text/csv"), ("text/*", "text/csv"),
        ("application/json, text/csv;q=0.5", "application/json"), ("*/*", "application/json"),
        ("text/csv;q=0, */*", "application/json"),
    ])
    async def test_accept_picks_the_representation(
        self, client: httpx.AsyncClient, accept: str, media_type: str
    ) -> None:
        r = await client.get("/v1/kpis", params={"municipality": random_ags()}, headers={"Accept": accept})
        assert r.status_code == 200
        assert r.headers["content-type"].startswith(media_type)

    async def test_unacceptable_media_type_is_406(self, client: httpx.AsyncClient) -> None:
        r = await client.get("/v1/kpis", headers={"Accept": "application/xml"})
        assert r.status_code == 406
        assert r.headers["content-type"] == "application/problem+json"


class TestLimits:
    async def test_unreachable_database_is_a_503_problem_not_a_500(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        class Down:
            def acquire(self) -> None:
                raise ConnectionRefusedError("connection refused")

        pool = app.state.pool
        app.state.pool = Down()
        try:
            r = await client.get("/v1/kpis", params={"municipality": random_ags()})
        finally:
            app.state.pool = pool
        assert r.status_code == 503
        assert r.headers["content-type"] == "application/problem+json"
        assert r.headers["retry-after"] == "5"

    async def test_query_over_too_many_stored_values_is_refused_naming_the_range(
        self, app: FastAPI, client: httpx.AsyncClient, funnel: tuple[str, str, Keyed]
    ) -> None:
        ags, svc, _ = funnel
        settings = app.state.settings
        before = settings.max_query_values
        settings.max_query_values = 3
        try:
            r = await client.get("/v1/kpis", params={"municipality": ags, "service": svc, "from": "2026-03-01",
                                                     "to": "2026-03-02"})
        finally:
            settings.max_query_values = before
        assert r.status_code == 422
        assert r.json()["invalid-params"][0]["name"] == "to"
