"""Broker faults on the three-broker cluster under steady load: nothing lost, nothing counted twice."""

from __future__ import annotations

import asyncio
import os
import signal

from bench.probes import end_offsets
from tests.cluster.conftest import (
    ApplicationLoad,
    ClusterStack,
    assert_every_case_once,
    assert_exact,
    describe,
    describe_now,
    load_for,
    wait_accepted,
    wait_fully_replicated,
)
from tests.waiting import eventually

SESSION_TIMEOUT_S = 9.0
"""Kafka's default `broker.session.timeout.ms` (9000): a broker silent this long is fenced by the controller."""


async def busiest_partition(cs: ClusterStack, before: dict[int, int]) -> int:
    """The usage partition that received the most records since `before`."""
    after = await end_offsets(cs.bootstrap)
    return max(after, key=lambda p: after[p] - before.get(p, 0))


class TestLeaderKilled:
    async def test_kill_9_of_the_busiest_partitions_leader_loses_and_doubles_nothing(
        self, healthy: ClusterStack, api_key: str, own_ags: str
    ) -> None:
        before = await end_offsets(healthy.bootstrap)
        load = load_for(healthy, api_key, own_ags, rate=300, seconds=20)
        task = asyncio.create_task(load.run())
        applications = asyncio.create_task(ApplicationLoad(healthy.bootstrap, own_ags, 120, 8).run())
        await wait_accepted(load, 900)
        partition = await busiest_partition(healthy, before)
        leader = (await describe(healthy.bootstrap))[partition].leader
        healthy.kafka.node(leader).kill()

        async def new_leader() -> int:
            state = (await describe_now(healthy.bootstrap)).get(partition)
            return state.leader if state is not None else -1

        elected = await eventually(new_leader, lambda n: n not in (leader, -1), timeout=60, interval=0.25)
        # Writes go on to the new leader with two in-sync replicas (min.insync.replicas=2 still met).
        accepted_at_kill = len(load.result.accepted_ids)
        await wait_accepted(load, accepted_at_kill + 600)
        await asyncio.to_thread(healthy.kafka.start)
        result = await task

        assert elected != leader
        await assert_exact(healthy, own_ags, result)
        await assert_every_case_once(healthy, own_ags, await applications)
        await wait_fully_replicated(healthy.bootstrap)


class TestRollingRestart:
    async def test_restarting_every_broker_in_turn_loses_and_doubles_nothing(
        self, healthy: ClusterStack, api_key: str, own_ags: str
    ) -> None:
        load = load_for(healthy, api_key, own_ags, rate=300, seconds=30)
        task = asyncio.create_task(load.run())
        applications = asyncio.create_task(ApplicationLoad(healthy.bootstrap, own_ags, 150, 6).run())
        await wait_accepted(load, 600)
        for node in healthy.kafka.nodes:
            # As an operator (or Strimzi) rolls a cluster: a graceful stop, a start, then wait for the node's
            # replicas to be back in sync before the next one goes.
            at_stop = len(load.result.accepted_ids)
            await asyncio.to_thread(node.stop)
            await wait_accepted(load, at_stop + 150)
            await asyncio.to_thread(node.start)
            await wait_fully_replicated(healthy.bootstrap)
        result = await task

        assert result.sent_events >= 3 * 150
        await assert_exact(healthy, own_ags, result)
        await assert_every_case_once(healthy, own_ags, await applications)


class TestFrozenBroker:
    async def test_a_broker_frozen_past_its_session_timeout_is_fenced_and_rejoins(
        self, healthy: ClusterStack, api_key: str, own_ags: str
    ) -> None:
        before = await end_offsets(healthy.bootstrap)
        load = load_for(healthy, api_key, own_ags, rate=300, seconds=40)
        task = asyncio.create_task(load.run())
        applications = asyncio.create_task(ApplicationLoad(healthy.bootstrap, own_ags, 200, 6).run())
        await wait_accepted(load, 600)
        partition = await busiest_partition(healthy, before)
        leader = (await describe(healthy.bootstrap))[partition].leader
        frozen = healthy.kafka.node(leader)
        others = ",".join(n.bootstrap for n in healthy.kafka.nodes if n is not frozen)
        assert frozen.proc is not None
        os.kill(frozen.proc.pid, signal.SIGSTOP)
        try:
            async def state() -> tuple[int, list[int]]:
                p = (await describe_now(others)).get(partition)
                return (p.leader, p.isr) if p is not None else (-1, [])

            # Fenced: another broker leads and the frozen one left the in-sync set (only after the session
            # timeout, so the freeze lasted longer than that).
            await eventually(state, lambda s: s[0] not in (leader, -1) and leader not in s[1],
                             timeout=SESSION_TIMEOUT_S + 60, interval=0.25)
            at_fence = len(load.result.accepted_ids)
            await wait_accepted(load, at_fence + 300)
        finally:
            os.kill(frozen.proc.pid, signal.SIGCONT)
        result = await task

        await assert_exact(healthy, own_ags, result)
        await assert_every_case_once(healthy, own_ags, await applications)
        await wait_fully_replicated(healthy.bootstrap)
