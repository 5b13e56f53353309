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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from bench.load import Load, LoadConfig, LoadResult, create_api_key
from kp.cluster import KafkaCluster
from kp.local import LocalStack, ServiceProcess
from kp.pgreplica import PostgresPair
from services.workflow.adapters import FileSystemEAkte
from shared.kafka import APPLICATION_EVENTS, USAGE_EVENTS, make_producer
from tests import exactly
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
    def run_dir(self) -> Path:
        return self.local.run_dir

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
        env = {"KP_EXTRA_MUNICIPALITIES": ",".join(CLUSTER_MUNICIPALITIES),
               "KP_EAKTE_ROOT": str(run_dir / "eakte"), "KP_TIMER_INTERVAL_S": "0.2", "KP_RELAY_INTERVAL_S": "0.05"}
        services = {name: local.service(name, env) for name in ("ingest", "aggregator", "workflow")}
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
    await exactly.wait_accepted(load, at_least, timeout)


async def assert_exact(stack: ClusterStack, ags: str, result: LoadResult) -> None:
    await exactly.assert_exact(stack, ags, result, count_timeout=120, lag_timeout=90)


DOCS = ["wohnungsgeberbestaetigung", "ausweisdokument"]
"""Documents of a complete Wohnsitz application: its case runs through every automatic step to the E-Akte."""


@dataclass
class ApplicationLoad:
    """`application.submitted` events for one municipality, paced, each re-sent with the same id until Kafka
    acknowledges it (as a portal does); `acknowledged` holds the application ids Kafka confirmed."""

    bootstrap: str
    ags: str
    count: int
    rate: float
    acknowledged: list[str] = field(default_factory=list)
    retries: int = 0

    async def run(self) -> list[str]:
        producer = make_producer(self.bootstrap, request_timeout_ms=5000)
        await producer.start()
        try:
            for i in range(self.count):
                application_id = f"APP-{self.ags}-{i:05d}"
                event = {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, application_id)),
                         "type": "application.submitted", "source": "cluster-test",
                         "time": datetime.now(UTC).isoformat(), "municipality": self.ags, "service": WOHNSITZ,
                         "application_id": application_id, "data": {"channel": "online", "documents": DOCS}}
                value, key = orjson.dumps(event), f"{self.ags}:{WOHNSITZ}".encode()
                while True:
                    try:
                        await producer.send_and_wait(APPLICATION_EVENTS.name, value, key=key)
                        break
                    except Exception:  # a broker outage; a new producer, the same event again
                        self.retries += 1
                        with contextlib.suppress(Exception):
                            await producer.stop()
                        producer = make_producer(self.bootstrap, request_timeout_ms=5000)
                        await producer.start()
                self.acknowledged.append(application_id)
                await asyncio.sleep(1 / self.rate)  # pacing of the offered load, not a wait for a condition
        finally:
            await producer.stop()
        return self.acknowledged


async def assert_every_case_once(cs: ClusterStack, ags: str, application_ids: list[str]) -> None:
    """Each acknowledged application has exactly one case, closed, with one `akte` step, one filing in the
    audit and one document in the E-Akte."""
    async def closed() -> int:
        conn = await asyncpg.connect(cs.database_url)
        try:
            return int(await conn.fetchval(
                "SELECT count(*) FROM wf_cases WHERE application_id = ANY($1::text[]) AND state = 'closed'",
                application_ids))
        finally:
            await conn.close()

    await eventually(closed, lambda n: n == len(application_ids), timeout=120, interval=0.25)
    conn = await asyncpg.connect(cs.database_url)
    try:
        cases = await conn.fetch(
            "SELECT application_id, count(*) AS n FROM wf_cases WHERE application_id = ANY($1::text[]) GROUP BY 1",
            application_ids)
        case_ids = [r["case_id"] for r in await conn.fetch(
            "SELECT case_id FROM wf_cases WHERE application_id = ANY($1::text[])", application_ids)]
        filed = await conn.fetch(
            "SELECT case_id, count(*) AS n FROM wf_audit WHERE action = 'filed' AND case_id = ANY($1::uuid[]) "
            "GROUP BY case_id", case_ids)
        steps = await conn.fetchval(
            """SELECT count(*) FROM (SELECT convert_from(e, 'UTF8')::jsonb AS p
                   FROM wf_outbox, unnest(coalesce(payloads, ARRAY[payload])) AS e) o
               WHERE p->>'application_id' = ANY($1::text[]) AND p->>'type' = 'workflow.step.completed'
                 AND p->'data'->>'step' = 'akte'""", application_ids)
    finally:
        await conn.close()
    assert sorted(r["n"] for r in cases) == [1] * len(application_ids)
    assert sorted(r["n"] for r in filed) == [1] * len(application_ids)
    assert steps == len(application_ids)
    stored = FileSystemEAkte(cs.run_dir / "eakte").stored()
    keys = {f"{c}:akte" for c in case_ids}
    assert keys <= set(stored)
    assert len([d for d in stored.values() if d["record"]["municipality"] == ags]) == len(keys)
