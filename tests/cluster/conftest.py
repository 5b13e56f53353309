"""A three-broker KRaft cluster, PostgreSQL with a streaming replica, ingest and aggregator, shared by every
test of this folder.

The package-scoped `cluster` fixture owns its brokers and database (under `.run/cluster-<pid>`), so its tests
may kill, freeze and restart brokers and kill the database primary without disturbing other test modules.
Before each test every broker and service is brought back up and every partition has its three in-sync
replicas again. The database failover is one-way: after it the promoted replica serves alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from bench.load import Load, LoadConfig, LoadResult, create_api_key
from bench.probes import aggregator_lag, counted
from kp.cluster import KafkaCluster
from kp.local import LocalStack, ServiceProcess
from kp.pgreplica import PostgresPair
from kp.stack import KafkaNode
from shared.kafka import USAGE_EVENTS
from tests.waiting import eventually

ROOT = Path(__file__).resolve().parent.parent.parent
WOHNSITZ = "99115005104000"
CLUSTER_MUNICIPALITIES = ["97" + f"{uuid.uuid4().int % 10**6:06d}" for _ in range(16)]
"""AGS no other test uses (outside the real ones), configured as extra members of the cluster stack."""


@dataclass
class PartitionState:
    leader: int
    replicas: list[int]
    isr: list[int]
    preferred: int
    """The first replica of the assignment, the leader when all are in sync and balanced."""


@dataclass
class ClusterStack:
    local: LocalStack
    kafka: KafkaCluster
    pg: PostgresPair
    services: dict[str, ServiceProcess]

    @property
    def bootstrap(self) -> str:
        return self.kafka.bootstrap

    @property
    def database_url(self) -> str:
        assert self.local.database_url
        return self.local.database_url

    @property
    def ingest(self) -> ServiceProcess:
        return self.services["ingest"]

    def ensure_up(self) -> None:
        """Resume frozen brokers, start killed ones and dead services, wait until all are ready."""
        for node in self.kafka.nodes:
            if node.running():
                assert node.proc is not None
                with contextlib.suppress(ProcessLookupError):
                    os.kill(node.proc.pid, signal.SIGCONT)
        self.kafka.start()
        for sp in self.services.values():
            if sp.proc is None or sp.proc.poll() is not None:
                sp.proc = None
                sp.start()
        for sp in self.services.values():
            sp.wait_ready(timeout=90)

    def stop(self) -> None:
        for sp in self.services.values():
            sp.stop()
        self.local.stop()


async def describe(bootstrap: str, topic: str = USAGE_EVENTS.name) -> dict[int, PartitionState]:
    """Leader, replicas and in-sync replicas of each partition of `topic`, as the cluster reports them."""
    # A short request timeout: a request to a frozen broker fails fast and the waiting probe asks again.
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return {p["partition"]: PartitionState(p["leader"], sorted(p["replicas"]), sorted(p["isr"]), p["replicas"][0])
            for p in described[0]["partitions"]}


async def describe_now(bootstrap: str, topic: str = USAGE_EVENTS.name) -> dict[int, PartitionState]:
    """As `describe`, but empty while the cluster cannot answer (a node just died, an election runs), so a
    waiting probe asks again."""
    try:
        return await describe(bootstrap, topic)
    except (KafkaError, OSError):
        return {}


async def wait_fully_replicated(bootstrap: str, timeout: float = 90.0) -> None:
    """Every partition of the usage topic has all three replicas in sync and a leader."""
    async def states() -> dict[int, PartitionState]:
        return await describe_now(bootstrap)

    await eventually(states, lambda s: bool(s) and all(len(p.isr) == 3 and p.leader > 0 for p in s.values()),
                     timeout=timeout, interval=0.5)


@pytest.fixture(scope="package")
def cluster() -> Iterator[ClusterStack]:
    run_dir = ROOT / ".run" / f"cluster-{os.getpid()}"
    local = LocalStack(run_dir=run_dir, brokers=3, pg_replica=True)
    cs: ClusterStack | None = None
    try:
        local.start_infra()
        assert local.cluster is not None
        assert local.pg_pair is not None
        env = {"KP_EXTRA_MUNICIPALITIES": ",".join(CLUSTER_MUNICIPALITIES)}
        services = {name: local.service(name, env) for name in ("ingest", "aggregator")}
        cs = ClusterStack(local, local.cluster, local.pg_pair, services)
        cs.ensure_up()
        yield cs
    finally:
        if cs is not None:
            cs.stop()
        if os.environ.get("KP_FAULTS_KEEP"):  # keep the logs for a post-mortem when asked to
            local.stop()
        else:
            local.purge()


@pytest.fixture
async def healthy(cluster: ClusterStack) -> ClusterStack:
    """The cluster stack with every broker and service running and all replicas in sync."""
    await asyncio.to_thread(cluster.ensure_up)
    await wait_fully_replicated(cluster.bootstrap)
    return cluster


@pytest.fixture
def own_ags() -> str:
    """An AGS of this test alone, so KPI counts are this test's alone."""
    return CLUSTER_MUNICIPALITIES.pop()


@pytest.fixture
async def api_key(healthy: ClusterStack, own_ags: str) -> str:
    key = await create_api_key(healthy.database_url, "kp-cluster", [own_ags])
    assert key is not None
    return key


def load_for(cs: ClusterStack, key: str, ags: str, *, rate: float, seconds: float) -> Load:
    """Simulator traffic for the test's own municipality; failed batches are re-sent with the same ids."""
    return Load(LoadConfig(url=cs.ingest.url, rate=rate, seconds=seconds, batch_size=50, concurrency=4,
                           seed=uuid.uuid4().int % 10**6, duplicate_share=0.05, api_key=key, pair=(ags, WOHNSITZ),
                           max_attempts=80, retry_grace_s=60))


async def wait_accepted(load: Load, at_least: int, timeout: float = 60.0) -> None:
    async def accepted() -> int:
        return len(load.result.accepted_ids)

    await eventually(accepted, lambda n: n >= at_least, timeout=timeout)


async def assert_exact(cs: ClusterStack, ags: str, result: LoadResult) -> None:
    """Every event sent was accepted (after retries), and the KPIs count each accepted event exactly once."""
    assert result.gave_up_batches == 0, result.summary()
    assert result.rejected == 0, result.rejected_reasons
    assert len(result.accepted_ids) == result.sent_events
    accepted = len(result.accepted_ids)

    async def now_counted() -> int:
        return await counted(cs.database_url, ags)

    await eventually(now_counted, lambda n: n >= accepted, timeout=120, interval=0.25)

    async def lag() -> int:
        return await aggregator_lag(cs.bootstrap, cs.database_url)

    await eventually(lag, lambda n: n == 0, timeout=90, interval=0.25)
    # Drained: nothing more can arrive, so the count must be exact, not just large enough.
    assert await now_counted() == accepted


def node_of(cs: ClusterStack, node_id: int) -> KafkaNode:
    return cs.kafka.node(node_id)
