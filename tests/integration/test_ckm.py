"""Cell Key Method end to end: events through real Kafka into the aggregator and PostgreSQL, counts out of the
publisher's API, CSV, totals, comparison and dashboard; exact key sums, one value per cell, and an attacker.
"""

from __future__ import annotations

import csv
import io
import random
import re
import shutil
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from asgi_lifespan import LifespanManager

from kp.local import LocalStack, ServiceProcess
from services.aggregator.fold import BERLIN
from services.aggregator.repository import upsert_kpis
from services.publisher.app import create_app
from services.publisher.settings import PublisherSettings
from shared import ckm
from shared.db import migrate, migration_files
from shared.reference import municipalities
from tests.ckm_attack import Attack
from tests.factories import usage_event
from tests.integration.test_aggregator_exactly_once import Lane, lane, stored_position
from tests.waiting import eventually

__all__ = ["lane"]

SECRET = "integration-test-secret-of-the-cell-key-method"
DAYS = 14
CHANNELS = ("web", "app")


@dataclass
class Data:
    """What the test produced: the member city, the service, the days and every event per (day, channel)."""

    ags: str
    service: str
    days: list[date]
    ids: dict[tuple[int, str], list[uuid.UUID]]

    def true(self, day: int, channel: str | None = None) -> int:
        return sum(len(self.ids.get((day, c), [])) for c in ([channel] if channel else CHANNELS))

    def expected(self, days: range, channel: str | None = None) -> int:
        """The published value of a cell: the true count perturbed at the sum of its record keys."""
        ids = [i for d in days for c in ([channel] if channel else CHANNELS) for i in self.ids.get((d, c), [])]
        key = ckm.cell_key([ckm.record_key(SECRET.encode(), i) for i in ids])
        return ckm.perturb(len(ids), key)


@pytest.fixture
def running(lane: Lane) -> Iterator[ServiceProcess]:
    agg = lane.aggregator(KP_LATE_HORIZON_DAYS="30", KP_CKM_SECRET=SECRET)
    agg.start()
    agg.wait_ready()
    try:
        yield agg
    finally:
        agg.stop()


@pytest.fixture
async def data(lane: Lane, running: ServiceProcess, db: asyncpg.Connection) -> Data:
    """Two weeks of small daily counts per channel in a member city, for a service of this test only; every
    event sent twice (a client retry), so only the first may add its record key."""
    ags = municipalities()[0].ags
    service = lane.services[0]
    today = datetime.now(UTC).astimezone(BERLIN).date()
    days = [today - timedelta(days=DAYS + 2 - d) for d in range(DAYS)]
    rng = random.Random()
    ids: dict[tuple[int, str], list[uuid.UUID]] = defaultdict(list)
    events: list[dict[str, Any]] = []
    for d, day in enumerate(days):
        at = datetime(day.year, day.month, day.day, 10, tzinfo=BERLIN)
        for channel in CHANNELS:
            for _ in range(rng.choice((0, 1, 1, 2, 2, 3, 4, 6, 9))):
                e = usage_event("usage.session.started", municipality=ags, service=service, time=at,
                                data={"channel": channel, "device": "mobile"})
                ids[(d, channel)].append(uuid.UUID(e["id"]))
                events.append(e)
    await lane.produce(events + events)
    await eventually(lambda: stored_position(db, f"agg-{lane.unique}", lane.usage_topic),
                     lambda p: p >= 2 * len(events), timeout=90)
    return Data(ags, service, days, dict(ids))


@pytest.fixture
async def client(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    application = create_app(PublisherSettings(database_url=database_url, environment="test"))
    async with (LifespanManager(application, startup_timeout=60, shutdown_timeout=60) as manager,
                httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url="http://test") as c):
        yield c


def _params(data: Data, first: int, last: int, period: str = "day") -> dict[str, str]:
    return {"municipality": data.ags, "service": data.service, "period": period, "family": "usage",
            "from": data.days[first].isoformat(), "to": data.days[last].isoformat()}


def _values(items: list[dict[str, Any]], metric: str, dim: str = "") -> dict[str, Any]:
    return {i.get("period_start", "total")[:10]: i["value"] for i in items
            if i["metric"] == metric and i["dimension"] == dim}


class TestKeySums:
    async def test_each_row_holds_the_count_and_key_sum_of_its_events_once(
        self, data: Data, db: asyncpg.Connection
    ) -> None:
        rows = await db.fetch(
            """SELECT granularity, period_start, dimension, value, key_sum FROM kpi_values
               WHERE municipality = $1 AND service = $2 AND metric = 'channel'""", data.ags, data.service)
        assert rows
        for r in rows:
            if r["granularity"] != "day":
                continue
            day = r["period_start"].astimezone(BERLIN).date()
            ids = data.ids[(data.days.index(day), r["dimension"])]
            assert r["value"] == len(ids)
            assert r["key_sum"] == ckm.cell_key([ckm.record_key(SECRET.encode(), i) for i in ids])
        by_granularity: dict[str, tuple[int, int]] = {}
        for g in ("hour", "day", "month"):
            part = [r for r in rows if r["granularity"] == g]
            by_granularity[g] = (sum(r["value"] for r in part), ckm.cell_key([r["key_sum"] for r in part]))
        assert by_granularity["hour"] == by_granularity["day"] == by_granularity["month"]


class TestOneValuePerCell:
    async def test_every_count_is_the_true_count_perturbed_at_its_cell_key(
        self, data: Data, client: httpx.AsyncClient
    ) -> None:
        body = (await client.get("/v1/kpis", params=_params(data, 0, DAYS - 1))).json()
        assert body["perturbation"]["max_deviation"] == ckm.MAX_DEVIATION
        started = _values(body["items"], "sessions_started")
        for d, day in enumerate(data.days):
            if data.true(d):
                # a count perturbed to 0 is left out, like a true 0
                assert started.get(day.isoformat(), 0) == data.expected(range(d, d + 1))
                assert abs(started.get(day.isoformat(), 0) - data.true(d)) <= ckm.MAX_DEVIATION
            for c in CHANNELS:
                if data.true(d, c):
                    assert _values(body["items"], "channel", c).get(day.isoformat(), 0) == data.expected(
                        range(d, d + 1), c)
        totals = (await client.get("/v1/kpis/totals", params=_params(data, 0, DAYS - 1))).json()["items"]
        assert _values(totals, "sessions_started").get("total", 0) == data.expected(range(DAYS))

    async def test_the_same_cell_through_json_csv_totals_hours_and_dashboard_has_one_value(
        self, data: Data, client: httpx.AsyncClient
    ) -> None:
        as_json = _values((await client.get("/v1/kpis.json", params=_params(data, 0, DAYS - 1))).json()["items"],
                          "sessions_started")
        csv_rows = list(csv.DictReader(io.StringIO(
            (await client.get("/v1/kpis.csv", params=_params(data, 0, DAYS - 1))).text)))
        as_csv = {r["period_start"][:10]: float(r["value"]) for r in csv_rows if r["metric"] == "sessions_started"}
        assert as_csv == as_json
        page = (await client.get(f"/dashboard/{data.ags}", params={
            "service": data.service, "period": "day", "from": data.days[0].isoformat(),
            "to": data.days[-1].isoformat()})).text
        island = re.search(r'<script type="application/json" id="nutzung-data">(.*?)</script>', page, re.S)
        assert island is not None
        chart = orjson.loads(island.group(1))
        on_dashboard = dict(zip(chart["labels"], chart["datasets"][0]["data"], strict=True))
        assert sorted(v for v in on_dashboard.values() if v) == sorted(as_json.values())
        assert "höchstens 3" in page or f"höchstens {ckm.MAX_DEVIATION}" in page
        for d, day in enumerate(data.days):
            if not data.true(d):
                continue
            one_day = (await client.get("/v1/kpis/totals", params=_params(data, d, d))).json()["items"]
            by_hour = (await client.get("/v1/kpis/totals", params=_params(data, d, d, "hour"))).json()["items"]
            assert _values(one_day, "sessions_started").get("total", 0) == as_json.get(day.isoformat(), 0)
            assert _values(by_hour, "sessions_started").get("total", 0) == as_json.get(day.isoformat(), 0)

    async def test_the_unperturbed_count_appears_only_where_the_table_maps_it_to_itself(
        self, data: Data, client: httpx.AsyncClient
    ) -> None:
        changed = 0
        for first in range(DAYS):
            last = min(DAYS - 1, first + 3)
            totals = (await client.get("/v1/kpis/totals", params=_params(data, first, last))).json()["items"]
            got = _values(totals, "sessions_started").get("total", 0)
            true = sum(data.true(d) for d in range(first, last + 1))
            if not true:
                continue
            key = ckm.cell_key([ckm.record_key(SECRET.encode(), i) for d in range(first, last + 1)
                                for c in CHANNELS for i in data.ids.get((d, c), [])])
            assert got == true + ckm.table().deviation(true, key)
            changed += got != true
        assert changed  # with ~14 cells, P(no cell changed) < 0.27^14


class TestAttacker:
    async def test_no_small_count_is_determined_by_many_overlapping_queries(
        self, data: Data, client: httpx.AsyncClient
    ) -> None:
        """Every range total at day and hour granularity, every period value, the channel splits, and the
        comparison endpoint over random ranges, all solved together as an integer linear program."""
        attack = Attack()
        subject = next(m for m in municipalities() if m.ags == data.ags)

        def cells(first: int, last: int, channel: str | None = None) -> list[tuple[int, str]]:
            return [(d, c) for d in range(first, last + 1) for c in ([channel] if channel else CHANNELS)]

        def learn(items: list[dict[str, Any]], first: int, last: int) -> None:
            for i in items:
                start = i.get("period_start")
                lo = hi = data.days.index(date.fromisoformat(start[:10])) if start else None
                lo, hi = (first, last) if lo is None or hi is None else (lo, hi)
                if i["metric"] == "sessions_started":
                    attack.published(cells(lo, hi), int(i["value"]))
                elif i["metric"] == "channel":
                    attack.published(cells(lo, hi, i["dimension"]), int(i["value"]))

        whole = (await client.get("/v1/kpis", params=_params(data, 0, DAYS - 1))).json()["items"]
        learn(whole, 0, DAYS - 1)
        # a count perturbed to 0 is left out like a true 0: a missing period value is a published 0
        present = {(data.days.index(date.fromisoformat(i["period_start"][:10])), i["metric"], i["dimension"])
                   for i in whole}
        for d in range(DAYS):
            if (d, "sessions_started", "") not in present:
                attack.published(cells(d, d), 0)
            for c in CHANNELS:
                if (d, "channel", c) not in present:
                    attack.published([(d, c)], 0)
        rng = random.Random(17)
        ranges = [(i, j) for i in range(DAYS) for j in range(i, DAYS)]
        others = [m.ags for m in municipalities() if m.ags != data.ags]
        for first, last in ranges:
            period = rng.choice(("day", "day", "hour"))
            params = _params(data, first, last, period)
            if rng.random() < 0.3:  # other filters: more cities, all families; the same cells come back
                params = {**params, "municipality": f"{data.ags},{rng.choice(others)}"}
                params.pop("family")
            totals = (await client.get("/v1/kpis/totals", params=params)).json()
            ours = [i for i in totals["items"] if i["municipality"] == data.ags]
            learn(ours, first, last)
            shown = {(i["metric"], i["dimension"]) for i in ours}
            if ("sessions_started", "") not in shown:  # left out: published as 0 (or a true 0)
                attack.published(cells(first, last), 0)
            for c in CHANNELS:
                if ("channel", c) not in shown:
                    attack.published(cells(first, last, c), 0)
        for first, last in rng.sample(ranges, 10):  # whole months: every day of ours in the months touched
            months = {(data.days[first].year, data.days[first].month), (data.days[last].year, data.days[last].month)}
            inside = [d for d, day in enumerate(data.days) if (day.year, day.month) in months]
            body = (await client.get("/v1/kpis", params=_params(data, first, last, "month"))).json()
            for i in body["items"]:
                start = date.fromisoformat(i["period_start"][:10])
                days = [d for d in inside if (data.days[d].year, data.days[d].month) == (start.year, start.month)]
                if i["metric"] == "sessions_started":
                    attack.published([(d, c) for d in days for c in CHANNELS], int(i["value"]))
                elif i["metric"] == "channel":
                    attack.published([(d, i["dimension"]) for d in days], int(i["value"]))
        for first, last in rng.sample(ranges, 25):
            body = (await client.get("/v1/comparison", params={
                "municipality": data.ags, "service": data.service, "period": "day",
                "from": data.days[first].isoformat(), "to": data.days[last].isoformat()})).json()
            for item in body["items"]:
                if item["metric"] == "sessions_started_per_10k" and item["value"] is not None:
                    # the group of one city with data: the city's own range total, scaled and rounded
                    counts = [n for n in range(10_000)
                              if round(n * 10_000 / subject.population, 2) == item["value"]]
                    attack.published_any(cells(first, last), counts)
        small = [(d, c) for d in range(DAYS) for c in CHANNELS if 0 < data.true(d, c) < 5]
        assert small
        found = attack.bounds(small)
        for (d, c), (low, high) in found.items():
            assert low <= data.true(d, c) <= high  # the attacker's system is right about the data
        determined = [cell for cell, (low, high) in found.items() if low == high]
        assert determined == [], f"{len(attack.rows)} answers determine {determined}"


class TestMigration:
    async def test_rows_counted_before_get_keys_that_agree_across_granularities(
        self, stack: LocalStack, tmp_path: Path
    ) -> None:
        assert stack.database_url
        name = f"ckm_{uuid.uuid4().hex[:10]}"
        admin = await asyncpg.connect(stack.database_url)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        url = stack.database_url.rsplit("/", 1)[0] + f"/{name}"
        before = tmp_path / "before"
        before.mkdir()
        for path in migration_files():
            if path.name < "0640":
                shutil.copy(path, before / path.name)
        await migrate(url, before)
        ags, svc = "06413000", "99000000000001"
        day = datetime(2026, 3, 1, tzinfo=BERLIN)
        hours = [day + timedelta(hours=h) for h in (9, 10, 14)]
        other_day = datetime(2026, 3, 2, tzinfo=BERLIN)  # its hours were deleted: they no longer add up
        rows = [("hour", h, "sessions_started", n) for h, n in zip(hours, (2, 1, 4), strict=True)]
        rows += [("day", day, "sessions_started", 7), ("day", other_day, "sessions_started", 3),
                 ("month", day, "sessions_started", 10)]
        conn = await asyncpg.connect(url)
        try:
            await conn.executemany(
                """INSERT INTO kpi_values (granularity, period_start, municipality, service, metric, dimension,
                                           value) VALUES ($1, $2, $3, $4, $5, '', $6)""",
                [(g, p, ags, svc, m, v) for g, p, m, v in rows])
            assert "0640_aggregator_cell_keys.sql" in await migrate(url)
            stored = {(r["granularity"], r["period_start"]): (r["value"], r["key_sum"]) for r in await conn.fetch(
                "SELECT granularity, period_start, value, key_sum FROM kpi_values WHERE service = $1", svc)}
            hour_keys = [stored[("hour", h)][1] for h in hours]
            assert len(set(hour_keys)) == 3  # one random key per hour row
            assert all(0 <= k < ckm.MODULUS for _, k in stored.values())
            assert stored[("day", day)][1] == ckm.cell_key(hour_keys)
            assert stored[("day", other_day)][1] != 0
            assert stored[("month", day)][1] == ckm.cell_key([stored[("day", day)][1], stored[("day", other_day)][1]])
            # events counted afterwards add their record keys on top, modulo 2^32
            new_key = ckm.MODULUS - 1
            start = day.astimezone(UTC)
            await upsert_kpis(conn, {("day", start, ags, svc, "sessions_started", ""): (1, new_key)})
            value, key = await conn.fetchrow(
                "SELECT value, key_sum FROM kpi_values WHERE granularity = 'day' AND period_start = $1 "
                "AND service = $2", start, svc)
            assert (value, key) == (8, ckm.cell_key([*hour_keys, new_key]))
        finally:
            await conn.close()
