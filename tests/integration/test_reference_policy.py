"""Reference-data policy through the real broker and database: an event of a municipality or service outside
the reference data (and the configured extras), written straight to Kafka, is neither counted nor published,
and opens no case (docs/adr/0020-reference-data-policy.md)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest

from kp.local import LocalStack, ServiceProcess
from services.workflow.adapters import ManualClock
from tests.factories import usage_event
from tests.integration.test_aggregator_exactly_once import Lane, lane, settled, stored_position
from tests.integration.test_workflow_support import (
    RunningApp,
    WfEnv,
    case_of,
    random_ags,
    running_app,
    submitted,
    wf_env,
)
from tests.waiting import eventually

__all__ = ["lane", "wf_env"]
WOHNSITZ = "99115005104000"


@pytest.fixture
def aggregator(lane: Lane) -> Iterator[ServiceProcess]:
    agg = lane.aggregator()
    agg.start()
    agg.wait_ready()
    try:
        yield agg
    finally:
        agg.stop()


@pytest.fixture(scope="module")
def publisher(stack: LocalStack) -> Iterator[ServiceProcess]:
    with stack.running("publisher") as proc:
        yield proc


@pytest.fixture(scope="module")
async def wf(wf_env: WfEnv) -> AsyncIterator[RunningApp]:
    async with running_app(wf_env, clock=ManualClock(datetime.now(UTC))) as running:
        yield running


def _unknown_ags() -> str:
    return "97" + f"{uuid.uuid4().int % 10**6:06d}"  # never configured as a member by any test


class TestUnknownKeysOnKafka:
    async def test_unknown_municipality_and_service_are_not_counted_nor_published(
        self, lane: Lane, aggregator: ServiceProcess, publisher: ServiceProcess, db: asyncpg.Connection
    ) -> None:
        stranger = _unknown_ags()
        unknown_service = "97" + f"{uuid.uuid4().int % 10**12:012d}"
        t = datetime.now(UTC) - timedelta(minutes=5)
        good = [usage_event(municipality=lane.ags, service=lane.services[0], time=t) for _ in range(3)]
        bad = [
            usage_event(municipality=stranger, service=lane.services[0], time=t),
            usage_event(municipality=lane.ags, service=unknown_service, time=t),
            usage_event(municipality=lane.ags, service="00000000000000", time=t),
            usage_event("usage.page.viewed", municipality=lane.ags, service=lane.services[0], time=t,
                        data={"page": "/antrag\u0000x", "device": "desktop", "referrer": "search"}),
        ]
        await lane.produce([good[0], *bad, good[1], good[2]])
        # Every record is behind the stored offsets (the partitions moved on), and only the valid ones count.
        await settled(db, lane, len(good) + len(bad), counted=len(good))
        assert await stored_position(db, f"agg-{lane.unique}", lane.usage_topic) >= len(good) + len(bad)
        strays = await db.fetchval(
            "SELECT count(*) FROM kpi_values WHERE municipality = $1 OR service = ANY($2::text[]::char(14)[])",
            stranger, [unknown_service, "00000000000000"])
        assert strays == 0
        views = await db.fetchval(
            "SELECT count(*) FROM kpi_values WHERE municipality = $1 AND metric = 'page_views'", lane.ags)
        assert views == 0  # the page view with NUL was refused by the aggregator's fast path, not counted

        async with httpx.AsyncClient(base_url=publisher.url, timeout=30) as client:
            for params in ({"municipality": stranger}, {"service": unknown_service}):
                r = await client.get("/v1/kpis/totals", params=params)
                assert r.status_code < 500
                items = r.json().get("items", []) if r.status_code == 200 else []
                assert items == [], (params, items)


class TestNonMemberApplication:
    async def test_a_non_member_municipality_opens_no_case(self, wf: RunningApp, wf_env: WfEnv) -> None:
        stranger = submitted(_unknown_ags(), WOHNSITZ, ["ausweisdokument"])
        member = submitted(random_ags(), WOHNSITZ, ["ausweisdokument"])
        await wf_env.publish(stranger, member)

        async def opened() -> dict[str, object] | None:
            return await case_of(wf_env.database_url, member["application_id"])

        await eventually(opened, lambda c: c is not None, timeout=60)
        assert await case_of(wf_env.database_url, stranger["application_id"]) is None
