"""Fault injection against a stack of its own: Kafka, PostgreSQL, ingest and aggregator as processes.

The module-scoped `faults` fixture owns its broker and database (under `.run/faults-<pid>`), so the tests may
stop, kill and restart any of them without disturbing other test modules. Before each test, everything is
brought back up. Counts are read from `kpi_values` for the test's own municipality codes only.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.load import create_api_key
from kp.local import LocalStack, ServiceProcess
from kp.stack import KafkaNode, PostgresNode

ROOT = Path(__file__).resolve().parent.parent.parent
WOHNSITZ = "99115005104000"


@dataclass
class FaultStack:
    run_dir: Path
    kafka: KafkaNode
    postgres: PostgresNode
    local: LocalStack
    services: dict[str, ServiceProcess] = field(default_factory=dict)

    @property
    def bootstrap(self) -> str:
        return self.kafka.bootstrap

    @property
    def database_url(self) -> str:
        return self.postgres.url

    @property
    def ingest(self) -> ServiceProcess:
        return self.services["ingest"]

    @property
    def aggregator(self) -> ServiceProcess:
        return self.services["aggregator"]

    def kafka_running(self) -> bool:
        return self.kafka.proc is not None and self.kafka.proc.poll() is None

    def postgres_running(self) -> bool:
        return (self.postgres.home / "data" / "postmaster.pid").exists()

    def ensure_up(self) -> None:
        """Bring back whatever a previous test stopped or killed; wait until every service is ready."""
        if not self.kafka_running():
            self.kafka.start()
        if not self.postgres_running():
            self.postgres.start()
        for sp in self.services.values():
            if sp.proc is None or sp.proc.poll() is not None:
                sp.proc = None
                sp.start()
        for sp in self.services.values():
            sp.wait_ready(timeout=90)

    def restart(self, name: str) -> None:
        sp = self.services[name]
        sp.start()
        sp.wait_ready(timeout=90)

    def stop(self) -> None:
        for sp in self.services.values():
            sp.stop()
        self.kafka.stop()
        self.postgres.stop()


@pytest.fixture(scope="module")
def faults() -> Iterator[FaultStack]:
    run_dir = ROOT / ".run" / f"faults-{os.getpid()}"
    kafka = KafkaNode(run_dir / "kafka")
    postgres = PostgresNode(run_dir / "postgres")
    local = LocalStack(run_dir=run_dir)
    fs = FaultStack(run_dir, kafka, postgres, local)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(run_dir, 0o755)
        postgres.start()
        kafka.start()
        local.kafka_bootstrap, local.database_url = kafka.bootstrap, postgres.url
        asyncio.run(local.prepare())
        for name in ("ingest", "aggregator"):
            fs.services[name] = local.service(name, {"KP_EXTRA_MUNICIPALITIES": ",".join(FAULT_MUNICIPALITIES)})
        fs.ensure_up()
        yield fs
    finally:
        fs.stop()
        if not os.environ.get("KP_FAULTS_KEEP"):  # keep the logs for a post-mortem when asked to
            postgres.remove()
            shutil.rmtree(run_dir, ignore_errors=True)


@pytest.fixture
def healthy(faults: FaultStack) -> FaultStack:
    """The fault stack with every component running (a previous test may have stopped one)."""
    faults.ensure_up()
    return faults


FAULT_MUNICIPALITIES = ["98" + f"{uuid.uuid4().int % 10**6:06d}" for _ in range(32)]
"""AGS no other test uses (outside the real ones), configured as extra members of the fault stack."""


@pytest.fixture
def own_ags() -> str:
    """An AGS of this test alone, so KPI counts are this test's alone."""
    return FAULT_MUNICIPALITIES.pop()


@pytest.fixture
async def api_key(healthy: FaultStack, own_ags: str) -> str:
    key = await create_api_key(healthy.database_url, "kp-faults", [own_ags])
    assert key is not None
    return key


async def read_partition(bootstrap: str, topic: str, partition: int, start: int, stop: int) -> list[Any]:
    """The records of offsets [start, stop) of one partition."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    out: list[Any] = []
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, start)
        deadline = asyncio.get_running_loop().time() + 30
        while len(out) < stop - start and asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(tp, timeout_ms=1000, max_records=1000)
            out += [r for r in batch.get(tp, []) if r.offset < stop]
    finally:
        await consumer.stop()
    return out
