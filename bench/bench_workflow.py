"""Workflow throughput and latency: complete Wohnsitz Anmeldungen through every automated step.

Each case runs Eingangsbestätigung, completeness check, E-Akte filing (file-system reference adapter,
fsync'd) and the notification, then closes: four automatic steps, ~13 workflow events via the outbox.

Headline: the service as it is deployed — `python -m services.workflow` processes (one per core, so two
here) in one consumer group, each with its in-process relay, timers and E-Akte writer, against their own
database and topics on the given Kafka + PostgreSQL (KP_KAFKA_BOOTSTRAP / KP_DATABASE_URL, else a stack of
its own); the load generator is this process. For scaling, the same with one process.

Measures: cases/s from the first publish until every case is closed; automatic step latency p50/p99 (from
the services' own histograms, scraped from /metrics, interpolated within buckets); outbox relay lag p50/p99
(row creation to Kafka acknowledgement, per event). Decomposition: one instance inside this process with an
E-Akte that answers at once (what the engine costs without filing I/O). Same-run baseline: a bare durable
transaction per case (inbox insert + one outbox row, the walking skeleton's work) on the same database.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
from aiokafka import AIOKafkaProducer
from asgi_lifespan import LifespanManager
from prometheus_client.parser import text_string_to_metric_families

from bench.harness import bench_stack
from kp.local import ServiceProcess
from kp.stack import free_port
from services.workflow.adapters import SystemClock
from services.workflow.app import create_app
from services.workflow.settings import WorkflowSettings
from shared.db import migrate
from shared.kafka import Topic, ensure_topics

ROOT = Path(__file__).resolve().parent.parent
WOHNSITZ = "99115005104000"
DOCS = ["wohnungsgeberbestaetigung", "ausweisdokument"]
CASES_TARGET = 1000.0
STEP_P99_TARGET_MS = 200.0


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))]


def histogram_quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """Prometheus-style quantile from cumulative (upper bound, count) pairs, linear within a bucket."""
    total = buckets[-1][1] if buckets else 0
    if not total:
        return None
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            return lower_bound + (bound - lower_bound) * ((rank - lower_count) / max(count - lower_count, 1e-9))
        lower_bound, lower_count = bound, count
    return lower_bound


def step_buckets(families: Iterable[Any]) -> list[tuple[float, float]]:
    """Cumulative buckets of successful automatic steps, all actions (and instances) together."""
    sums: dict[float, float] = {}
    for metric in families:
        if metric.name != "kp_workflow_step_latency_seconds":
            continue
        for s in metric.samples:
            if s.name.endswith("_bucket") and s.labels.get("result") == "ok":
                bound = float(s.labels["le"])
                sums[bound] = sums.get(bound, 0.0) + s.value
    return sorted(sums.items())


def submitted(ags: str) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "type": "application.submitted", "source": "bench-portal",
            "time": datetime.now(UTC).isoformat(), "municipality": ags, "service": WOHNSITZ,
            "application_id": f"BENCH-{uuid.uuid4().hex[:16]}", "data": {"channel": "online", "documents": DOCS}}


async def fresh_database(base_url: str) -> str:
    name = f"wf_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(base_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = base_url.rsplit("/", 1)[0] + f"/{name}"
    await migrate(url)
    return url


async def drop_database(base_url: str, url: str) -> None:
    admin = await asyncpg.connect(base_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    finally:
        await admin.close()


async def baseline(url: str, n: int) -> float:
    """Bare durable work per case: one transaction with an inbox insert and one outbox row."""
    pool = await asyncpg.create_pool(url, min_size=4, max_size=4)
    assert pool is not None
    try:
        async def one() -> None:
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute("INSERT INTO wf_inbox (event_id) VALUES ($1)", uuid.uuid4())
                await conn.execute(
                    "INSERT INTO wf_outbox (topic, key, payload, published_at) VALUES ('b', 'k', 'p', now())")

        started = time.perf_counter()
        for i in range(0, n, 4):
            await asyncio.gather(*(one() for _ in range(min(4, n - i))))
        return n / (time.perf_counter() - started)
    finally:
        await pool.close()


class NoFilingEAkte:
    """Decomposition only: an E-Akte that answers at once, to show what the engine does without filing I/O."""

    async def file(self, key: str, record: Any) -> str:
        return f"none:{key}"


async def publish_and_wait(kafka: str, url: str, app_topic: str, n: int) -> tuple[float, list[float]]:
    """Publish n submissions, wait until every case is closed and every outbox event is published.
    Returns the seconds from the first publish until the last case closed, and the relay lag per event (ms)."""
    events = [submitted("06413000") for _ in range(n)]
    conn = await asyncpg.connect(url)
    producer = AIOKafkaProducer(bootstrap_servers=kafka, acks="all", linger_ms=10)
    await producer.start()
    try:
        started = time.perf_counter()
        futures = [await producer.send(app_topic, orjson.dumps(e), key=f"06413000:{i % 64}".encode())
                   for i, e in enumerate(events)]
        await asyncio.gather(*futures)
        while await conn.fetchval("SELECT count(*) FROM wf_cases WHERE state = 'closed'") < n:
            if time.perf_counter() - started > 600:
                raise TimeoutError("cases did not close within 600 s")
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - started
        while await conn.fetchval("SELECT count(*) FROM wf_outbox WHERE published_at IS NULL"):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        lags = [r["lag"] for r in await conn.fetch(  # one value per event (a row holds a case's events)
            """SELECT EXTRACT(EPOCH FROM published_at - created_at)::float8 * 1000 AS lag
               FROM wf_outbox, unnest(coalesce(payloads, ARRAY[payload]))""")]
    finally:
        await producer.stop()
        await conn.close()
    return elapsed, lags


def result(n: int, elapsed: float, base_rate: float, lags: list[float],
           buckets: list[tuple[float, float]]) -> dict[str, Any]:
    p50, p99 = (histogram_quantile(buckets, q) for q in (0.5, 0.99))
    return {"rate": n / elapsed, "base_rate": base_rate, "p50_ms": p50 * 1000 if p50 is not None else None,
            "p99_ms": p99 * 1000 if p99 is not None else None, "lags": lags}


async def measure_services(kafka: str, base_url: str, n: int, instances: int, run_dir: Path) -> dict[str, Any]:
    """`instances` service processes in one consumer group, each with its own relay, timers and E-Akte writer
    (one E-Akte root), the load from this process."""
    url = await fresh_database(base_url)
    suffix = uuid.uuid4().hex[:8]
    app_topic, wf_topic = f"application.events.bench-{suffix}", f"workflow.events.bench-{suffix}"
    await ensure_topics(kafka, (Topic(app_topic, 6), Topic(wf_topic, 6)))
    eakte_dir = run_dir / f"eakte-{suffix}"
    env = {"KP_ENVIRONMENT": "test", "KP_DATABASE_URL": url, "KP_KAFKA_BOOTSTRAP": kafka,
           "KP_APPLICATION_TOPIC": app_topic, "KP_WORKFLOW_TOPIC": wf_topic, "KP_CONSUMER_GROUP": f"bench-{suffix}",
           "KP_EAKTE_ROOT": str(eakte_dir), "KP_DB_POOL_MAX": "12", "KP_RELAY_INTERVAL_S": "0.05",
           "KP_TIMER_INTERVAL_S": "0.5", "KP_LOG_LEVEL": "WARNING"}
    services = [ServiceProcess("workflow", free_port(), env, run_dir / f"workflow-{suffix}-{i}.log")
                for i in range(instances)]
    try:
        base_rate = await baseline(url, min(n, 2000))
        for sp in services:
            sp.start()
        for sp in services:
            await asyncio.to_thread(sp.wait_ready)
        await wait_for_assignment(url, services)
        elapsed, lags = await publish_and_wait(kafka, url, app_topic, n)
        families = []
        async with httpx.AsyncClient() as client:
            for sp in services:
                families += list(text_string_to_metric_families((await client.get(f"{sp.url}/metrics")).text))
        buckets = step_buckets(families)
    finally:
        for sp in services:
            await asyncio.to_thread(sp.stop)
        # The E-Akte files stay until every measure is done (`run` removes them): ext4 skips inodes freed in
        # the last minutes when it allocates new ones, so deleting thousands of files here would slow down
        # the file creation of the next measure.
        await drop_database(base_url, url)
    return result(n, elapsed, base_rate, lags, buckets)


async def wait_for_assignment(url: str, services: list[ServiceProcess], timeout_s: float = 60.0) -> None:
    """Until every instance reports partitions of the application topic (its consumer lag gauge is set only
    after a batch, so poll /readyz and then give the group a moment to settle its assignment)."""
    async with httpx.AsyncClient() as client:
        deadline = time.monotonic() + timeout_s
        for sp in services:
            while (await client.get(f"{sp.url}/readyz")).status_code != 200:
                if time.monotonic() > deadline:
                    raise TimeoutError("workflow instances not ready")
                await asyncio.sleep(0.2)
    await asyncio.sleep(3.0 if len(services) > 1 else 0.5)  # the group rebalances once per joining member


async def measure_in_process(kafka: str, base_url: str, n: int) -> dict[str, Any]:
    """Decomposition: one instance in this process with an E-Akte that answers at once."""
    url = await fresh_database(base_url)
    suffix = uuid.uuid4().hex[:8]
    app_topic, wf_topic = f"application.events.bench-{suffix}", f"workflow.events.bench-{suffix}"
    await ensure_topics(kafka, (Topic(app_topic, 6), Topic(wf_topic, 6)))
    settings = WorkflowSettings(
        environment="test", database_url=url, kafka_bootstrap=kafka, application_topic=app_topic,
        workflow_topic=wf_topic, consumer_group=f"bench-{suffix}", db_pool_max=12, relay_interval_s=0.05,
        timer_interval_s=0.5)
    try:
        base_rate = await baseline(url, min(n, 2000))
        app = create_app(settings, clock=SystemClock(), eakte=NoFilingEAkte())
        async with LifespanManager(app, startup_timeout=60, shutdown_timeout=60):
            elapsed, lags = await publish_and_wait(kafka, url, app_topic, n)
            buckets = step_buckets(app.state.metrics.registry.collect())
    finally:
        await drop_database(base_url, url)
    return result(n, elapsed, base_rate, lags, buckets)


async def measure_all(kafka: str, base_url: str, n: int, run_dir: Path) -> list[dict[str, Any]]:
    instances = max(2, os.cpu_count() or 2)
    full = await measure_services(kafka, base_url, n, instances, run_dir)
    single = await measure_services(kafka, base_url, n, 1, run_dir)
    bare = await measure_in_process(kafka, base_url, n)
    base = "bare durable tx per case (inbox + 1 outbox row)"
    lags = full["lags"]
    return [
        {"measure": f"workflow: cases/s through 4 automatic steps ({n} cases, {instances} instances)",
         "value": full["rate"], "unit": "cases/s", "baseline": base, "baseline_value": full["base_rate"],
         "target": f">= {CASES_TARGET:.0f}", "met": full["rate"] >= CASES_TARGET},
        {"measure": "workflow: automatic step latency p50", "value": full["p50_ms"], "unit": "ms", "baseline": None,
         "baseline_value": None, "target": None, "met": None},
        {"measure": "workflow: automatic step latency p99", "value": full["p99_ms"], "unit": "ms", "baseline": None,
         "baseline_value": None, "target": f"< {STEP_P99_TARGET_MS:.0f} ms",
         "met": full["p99_ms"] is not None and full["p99_ms"] < STEP_P99_TARGET_MS},
        {"measure": f"workflow: outbox relay lag p50 ({len(lags)} events)", "value": percentile(lags, 0.5),
         "unit": "ms", "baseline": None, "baseline_value": None, "target": None, "met": None},
        {"measure": "workflow: outbox relay lag p99", "value": percentile(lags, 0.99), "unit": "ms",
         "baseline": None, "baseline_value": None, "target": None, "met": None},
        {"measure": "workflow: cases/s, one instance (scaling reference)", "value": single["rate"],
         "unit": "cases/s", "baseline": base, "baseline_value": single["base_rate"], "target": None, "met": None},
        {"measure": "workflow: step latency p99, one instance", "value": single["p99_ms"], "unit": "ms",
         "baseline": None, "baseline_value": None, "target": None, "met": None},
        {"measure": "workflow: cases/s in one process without E-Akte I/O (decomposition)", "value": bare["rate"],
         "unit": "cases/s", "baseline": base, "baseline_value": bare["base_rate"], "target": None, "met": None},
    ]


def run(quick: bool) -> list[dict[str, Any]]:
    """Entry point of the benchmark harness."""
    n = 2000 if quick else 6000
    with bench_stack("workflow") as stack:
        assert stack.kafka_bootstrap
        assert stack.database_url
        try:
            return asyncio.run(measure_all(stack.kafka_bootstrap, stack.database_url, n, stack.run_dir))
        finally:
            for eakte_dir in stack.run_dir.glob("eakte-*"):
                shutil.rmtree(eakte_dir, ignore_errors=True)


if __name__ == "__main__":
    import sys

    from bench.harness import table

    rows = run(quick="--quick" in sys.argv)
    print(table(rows))
