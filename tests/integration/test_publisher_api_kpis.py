"""Open-data API against the real PostgreSQL: hand-checked KPI values in JSON and CSV, suppression, caching."""

from __future__ import annotations

import csv
import io
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from services.publisher.app import create_app
from services.publisher.settings import PublisherSettings
from tests.unit.test_suppression import recoverable
from tests.waiting import eventually

DAY1 = datetime(2026, 2, 28, 23, tzinfo=UTC)  # 2026-03-01 00:00 Europe/Berlin
DAY2 = datetime(2026, 3, 1, 23, tzinfo=UTC)
DAY1_LOCAL, DAY2_LOCAL = "2026-03-01T00:00:00+01:00", "2026-03-02T00:00:00+01:00"


def random_ags() -> str:
    return "99" + f"{uuid.uuid4().int % 10**6:06d}"


def random_leika() -> str:
    return "99" + f"{uuid.uuid4().int % 10**12:012d}"


Row = tuple[datetime, str, str, str, str, int]


async def insert(db: asyncpg.Connection, granularity: str, rows: list[Row]) -> None:
    await db.executemany(
        """INSERT INTO kpi_values (granularity, period_start, municipality, service, metric, dimension, value)
           VALUES ($1, $2, $3, $4, $5, $6, $7)""",
        [(granularity, *r) for r in rows],
    )


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
async def funnel(db: asyncpg.Connection) -> tuple[str, str]:
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
    await insert(db, "day", rows)
    return ags, svc


def _by(items: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {(i.get("period_start", "total"), i["metric"], i["dimension"]): i for i in items}


class TestKpiQuery:
    async def test_json_gives_the_hand_checked_counts_and_derived_values(
        self, client: httpx.AsyncClient, funnel: tuple[str, str]
    ) -> None:
        ags, svc = funnel
        r = await client.get("/v1/kpis", params={"municipality": ags, "service": svc, "period": "day",
                                                 "from": "2026-03-01", "to": "2026-03-02"})
        assert r.status_code == 200, r.text
        body = r.json()
        got = _by(body["items"])
        assert got[(DAY1_LOCAL, "sessions_started", "")]["value"] == 40
        assert got[(DAY1_LOCAL, "conversion_rate", "")]["value"] == 0.5
        assert got[(DAY1_LOCAL, "abandonment_rate", "")]["value"] == 0.3
        assert got[(DAY2_LOCAL, "abandonment_rate", "")]["value"] == 0.3333
        assert got[(DAY1_LOCAL, "mean_stars", "")]["value"] == 4.5
        assert got[(DAY1_LOCAL, "feedback_count", "")]["value"] == 20
        assert got[(DAY1_LOCAL, "duration_p50_s", "")]["value"] == 60.0
        assert got[(DAY1_LOCAL, "duration_p90_s", "")]["value"] == 108.0  # 60 + 60 * (18 - 10) / 10
        assert body["total_items"] == len(body["items"])
        assert body["query"]["municipality"] == [ags]
        assert all(i["municipality"] == ags and i["period"] == "day" for i in body["items"])

    async def test_csv_has_the_same_values_in_stable_columns_with_dot_for_suppressed(
        self, client: httpx.AsyncClient, funnel: tuple[str, str]
    ) -> None:
        ags, svc = funnel
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
            assert row[6] == ("." if item["suppressed"] else str(item["value"]))
        assert (await client.get("/v1/kpis.csv", params=params)).content == r.content

    async def test_family_filter_and_pagination_keep_a_stable_order(
        self, client: httpx.AsyncClient, funnel: tuple[str, str]
    ) -> None:
        ags, svc = funnel
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
        await insert(db, "month", [(DAY1, ags, svc, "sessions_started", "", 90)])
        r = await client.get("/v1/kpis", params={"municipality": ags, "period": "month", "from": "2026-03-15",
                                                 "to": "2026-03-20", "family": "usage"})
        assert [(i["period_start"], i["value"]) for i in r.json()["items"]] == [(DAY1_LOCAL, 90)]


    async def test_hours_across_the_spring_dst_switch_keep_their_berlin_offsets(
        self, client: httpx.AsyncClient, db: asyncpg.Connection
    ) -> None:
        ags, svc = random_ags(), random_leika()
        hours = [datetime(2026, 3, 28, 22, tzinfo=UTC), datetime(2026, 3, 28, 23, tzinfo=UTC),
                 datetime(2026, 3, 29, 0, tzinfo=UTC), datetime(2026, 3, 29, 1, tzinfo=UTC),
                 datetime(2026, 3, 29, 22, tzinfo=UTC)]
        await insert(db, "hour", [(h, ags, svc, "sessions_started", "", 10 + i) for i, h in enumerate(hours)])
        r = await client.get("/v1/kpis", params={"municipality": ags, "period": "hour", "from": "2026-03-29",
                                                 "to": "2026-03-29", "family": "usage"})
        # 2026-03-29 in Berlin runs from 23:00 UTC the day before to 22:00 UTC; 02:00 local does not exist
        assert [(i["period_start"], i["value"]) for i in r.json()["items"]] == [
            ("2026-03-29T00:00:00+01:00", 11), ("2026-03-29T01:00:00+01:00", 12),
            ("2026-03-29T03:00:00+02:00", 13),
        ]


class TestSuppression:
    async def test_small_count_and_its_complement_are_null_with_flag_and_total_stays(
        self, client: httpx.AsyncClient, funnel: tuple[str, str]
    ) -> None:
        ags, svc = funnel
        params = {"municipality": ags, "service": svc, "from": "2026-03-01", "to": "2026-03-02",
                  "family": "payment"}
        got = _by((await client.get("/v1/kpis", params=params)).json()["items"])
        # day 2 paypal = 2 < 5 (primary); the paypal total 14 would reveal it from day 1's 12 (secondary)
        assert got[(DAY2_LOCAL, "payment", "paypal")]["value"] is None
        assert got[(DAY2_LOCAL, "payment", "paypal")]["suppressed"] is True
        assert got[(DAY1_LOCAL, "payment", "paypal")]["value"] is None
        assert got[(DAY1_LOCAL, "payment", "paypal")]["suppressed"] is True
        assert got[(DAY2_LOCAL, "payment", "sepa_lastschrift")]["value"] == 13
        totals = _by((await client.get("/v1/kpis/totals", params=params)).json()["items"])
        assert totals[("total", "payment", "paypal")]["value"] == 14

    async def test_no_suppressed_value_follows_from_one_response_and_the_totals(
        self, client: httpx.AsyncClient, db: asyncpg.Connection
    ) -> None:
        ags, svc = random_ags(), random_leika()
        days = [datetime(2026, 4, d, 22, tzinfo=UTC) for d in range(1, 5)]  # 2..5 April, Berlin (CEST)
        plan = [
            {"web": 3, "app": 9, "desktop": 8, "mobile": 4, "s1": 2, "s3": 7, "s5": 20, "a0": 1, "a1": 6},
            {"web": 12, "app": 1, "desktop": 11, "mobile": 2, "s1": 6, "s3": 1, "s5": 9, "a0": 4, "a1": 4},
            {"web": 30, "app": 7, "desktop": 2, "mobile": 35, "s1": 0, "s3": 3, "s5": 2, "a0": 0, "a1": 9},
            {"web": 4, "app": 2, "desktop": 3, "mobile": 3, "s1": 8, "s3": 8, "s5": 8, "a0": 3, "a1": 1},
        ]
        rows = []
        for day, v in zip(days, plan, strict=True):
            cells = {("channel", "web"): v["web"], ("channel", "app"): v["app"],
                     ("device", "desktop"): v["desktop"], ("device", "mobile"): v["mobile"],
                     ("sessions_started", ""): v["web"] + v["app"], ("feedback", "1"): v["s1"],
                     ("feedback", "3"): v["s3"], ("feedback", "5"): v["s5"], ("abandoned_after_step", "0"): v["a0"],
                     ("abandoned_after_step", "1"): v["a1"], ("sessions_abandoned", ""): v["a0"] + v["a1"]}
            rows += [(day, ags, svc, m, d, n) for (m, d), n in cells.items() if n]
        await insert(db, "day", rows)
        params = {"municipality": ags, "service": svc, "from": "2026-04-02", "to": "2026-04-05"}
        items = (await client.get("/v1/kpis", params=params)).json()["items"]
        totals = (await client.get("/v1/kpis/totals", params=params)).json()["items"]
        published = [*items, *totals]
        hidden = {(i.get("period_start", "total"), i["metric"], i["dimension"]) for i in published if i["suppressed"]}
        assert all(i["value"] is None for i in published if i["suppressed"])
        assert all(i["value"] is not None for i in published if not i["suppressed"])
        assert ("2026-04-02T00:00:00+02:00", "feedback", "1") in hidden  # 2 < 5
        assert ("2026-04-03T00:00:00+02:00", "channel", "app") in hidden  # 1 < 5
        # Everything a reader may rely on: periods add up to the totals, splits add up to their whole.
        by_period: dict[str, dict[str, list[tuple[str, str, str]]]] = defaultdict(lambda: defaultdict(list))
        series: dict[tuple[str, str], list[tuple[str, str, str]]] = defaultdict(list)
        for i in published:
            key = (i.get("period_start", "total"), i["metric"], i["dimension"])
            if i["metric"] in ("mean_stars", "conversion_rate", "abandonment_rate"):
                continue
            by_period[key[0]][key[1]].append(key)
            if key[0] != "total":
                series[(key[1], key[2])].append(key)
        identities: list[list[tuple[Any, int]]] = [
            [(k, 1) for k in keys] + [(("total", m, d), -1)] for (m, d), keys in series.items()
        ]
        for p, metrics in by_period.items():
            for part, whole in (("channel", "sessions_started"), ("device", "sessions_started"),
                                ("feedback", "feedback_count"), ("abandoned_after_step", "sessions_abandoned")):
                identities.append([(k, 1) for k in metrics[part]] + [((p, whole, ""), -1)])
        assert hidden
        assert recoverable(identities, hidden) == set()
        # a mean computed from a hidden star count is hidden as well
        stars_hidden = {p for p, m, _ in hidden if m in ("feedback", "feedback_count")}
        for i in published:
            if i["metric"] == "mean_stars":
                assert i["suppressed"] == (i.get("period_start", "total") in stars_hidden)


class TestCaching:
    async def test_if_none_match_gets_304_without_the_database_until_data_changes(
        self, app: FastAPI, client: httpx.AsyncClient, funnel: tuple[str, str], db: asyncpg.Connection
    ) -> None:
        ags, svc = funnel
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
        self, client: httpx.AsyncClient, funnel: tuple[str, str]
    ) -> None:
        ags, svc = funnel
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
        self, app: FastAPI, client: httpx.AsyncClient, funnel: tuple[str, str]
    ) -> None:
        ags, svc = funnel
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
