"""PostgreSQL failover under load: kill -9 of the primary, promotion of the synchronous replica."""

from __future__ import annotations

import asyncio

from bench.probes import counted
from tests.cluster.conftest import (
    ApplicationLoad,
    ClusterStack,
    assert_every_case_once,
    assert_exact,
    load_for,
    wait_accepted,
)
from tests.waiting import eventually


class TestPrimaryKilled:
    async def test_kill_9_of_the_primary_and_promotion_lose_and_double_nothing(
        self, healthy: ClusterStack, api_key: str, own_ags: str
    ) -> None:
        pair = healthy.pg
        assert await asyncio.to_thread(pair.replica_streaming)
        load = load_for(healthy, api_key, own_ags, rate=300, seconds=25)
        task = asyncio.create_task(load.run())
        applications = asyncio.create_task(ApplicationLoad(healthy.bootstrap, own_ags, 150, 8).run())
        await wait_accepted(load, 900)

        async def now_counted() -> int:
            return await counted(healthy.database_url, own_ags)

        # The aggregator is committing batches (KPIs and offsets) when the primary dies.
        await eventually(now_counted, lambda n: n > 0, timeout=60)
        await asyncio.to_thread(pair.kill_primary)
        await asyncio.to_thread(pair.promote)
        result = await task

        assert not await asyncio.to_thread(pair.in_recovery, pair.replica)
        await assert_exact(healthy, own_ags, result)
        await assert_every_case_once(healthy, own_ags, await applications)
