"""Workflow throughput and latency: complete Wohnsitz Anmeldungen through every automated step.

Each case runs Eingangsbestätigung, completeness check, E-Akte filing (file-system reference adapter,
fsync'd) and the notification, then closes: four automatic steps, ~17 workflow events via the outbox.
The service runs in this process (consumer, engine, timers, relay) against its own database and topics on
the given Kafka + PostgreSQL (KP_KAFKA_BOOTSTRAP / KP_DATABASE_URL, else a stack of its own).

Measures: cases/s from the first publish until every case is closed; automatic step latency p50/p99 (from
the service's own histogram, interpolated within buckets); outbox relay lag p50/p99 (row creation to Kafka
acknowledgement, exact per row). Same-run baseline: a bare durable transaction per case (inbox insert +
one outbox row, the walking skeleton's work) on the same database.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaProducer
from asgi_lifespan import LifespanManager

from kp.local import LocalStack
from services.workflow.adapters import FileSystemEAkte, SystemClock
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


def step_buckets(registry: Any) -> list[tuple[float, float]]:
    """Cumulative buckets of successful automatic steps, all actions together."""
    sums: dict[float, float] = {}
    for metric in registry.collect():
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


async def measure(kafka: str, base_url: str, n: int, eakte: str = "filesystem",
                  relay_process: bool = False) -> dict[str, Any]:
    url = await fresh_database(base_url)
    suffix = uuid.uuid4().hex[:8]
    app_topic, wf_topic = f"application.events.bench-{suffix}", f"workflow.events.bench-{suffix}"
    await ensure_topics(kafka, (Topic(app_topic, 6), Topic(wf_topic, 6)))
    eakte_dir = Path(tempfile.mkdtemp(prefix="kp-bench-eakte-"))
    settings = WorkflowSettings(
        environment="test", database_url=url, kafka_bootstrap=kafka, application_topic=app_topic,
        workflow_topic=wf_topic, consumer_group=f"bench-{suffix}", eakte_root=eakte_dir, db_pool_max=12, lanes=8,
        relay_interval_s=0.05, timer_interval_s=0.5, relay_in_process=not relay_process)
    relay = None
    if relay_process:
        env = dict(os.environ, KP_DATABASE_URL=url, KP_KAFKA_BOOTSTRAP=kafka, KP_RELAY_INTERVAL_S="0.05",
                   KP_LOG_LEVEL="WARNING")
        relay = await asyncio.create_subprocess_exec(sys.executable, "-m", "services.workflow.relay", env=env,
                                                     cwd=ROOT)
    try:
        base_rate = await baseline(url, min(n, 2000))
        adapter = FileSystemEAkte(eakte_dir) if eakte == "filesystem" else NoFilingEAkte()
        app = create_app(settings, clock=SystemClock(), eakte=adapter)
        events = [submitted("06413000") for _ in range(n)]
        async with LifespanManager(app, startup_timeout=60, shutdown_timeout=60):
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
                outbox_rows = len(lags)
            finally:
                await producer.stop()
                await conn.close()
            buckets = step_buckets(app.state.metrics.registry)
    finally:
        if relay is not None:
            relay.terminate()
            await asyncio.wait_for(relay.wait(), 30)
        shutil.rmtree(eakte_dir, ignore_errors=True)
        await drop_database(base_url, url)
    p50, p99 = (histogram_quantile(buckets, q) for q in (0.5, 0.99))
    return {"rate": n / elapsed, "base_rate": base_rate, "p50_ms": p50 * 1000 if p50 is not None else None,
            "p99_ms": p99 * 1000 if p99 is not None else None, "lags": lags, "outbox_rows": outbox_rows}


async def measure_all(kafka: str, base_url: str, n: int) -> list[dict[str, Any]]:
    full = await measure(kafka, base_url, n)
    bare = await measure(kafka, base_url, n, eakte="none")
    split = await measure(kafka, base_url, n, relay_process=True)
    rate, base_rate, p50_ms, p99_ms = full["rate"], full["base_rate"], full["p50_ms"], full["p99_ms"]
    lags, outbox_rows = full["lags"], full["outbox_rows"]
    base = "bare durable tx per case (inbox + 1 outbox row)"
    return [
        {"measure": f"workflow: cases/s through 4 automatic steps ({n} cases)", "value": rate, "unit": "cases/s",
         "baseline": base, "baseline_value": base_rate, "target": f">= {CASES_TARGET:.0f}",
         "met": rate >= CASES_TARGET},
        {"measure": "workflow: automatic step latency p50", "value": p50_ms, "unit": "ms", "baseline": None,
         "baseline_value": None, "target": None, "met": None},
        {"measure": "workflow: automatic step latency p99", "value": p99_ms, "unit": "ms", "baseline": None,
         "baseline_value": None, "target": f"< {STEP_P99_TARGET_MS:.0f} ms",
         "met": p99_ms is not None and p99_ms < STEP_P99_TARGET_MS},
        {"measure": f"workflow: outbox relay lag p50 ({outbox_rows} events)", "value": percentile(lags, 0.5),
         "unit": "ms", "baseline": None, "baseline_value": None, "target": None, "met": None},
        {"measure": "workflow: outbox relay lag p99", "value": percentile(lags, 0.99), "unit": "ms",
         "baseline": None, "baseline_value": None, "target": None, "met": None},
        {"measure": "workflow: cases/s without E-Akte I/O (decomposition)", "value": bare["rate"],
         "unit": "cases/s", "baseline": base, "baseline_value": bare["base_rate"], "target": None, "met": None},
        {"measure": "workflow: cases/s, relay as its own process", "value": split["rate"], "unit": "cases/s",
         "baseline": base, "baseline_value": split["base_rate"], "target": f">= {CASES_TARGET:.0f}",
         "met": split["rate"] >= CASES_TARGET},
        {"measure": "workflow: outbox relay lag p99, relay as its own process",
         "value": percentile(split["lags"], 0.99), "unit": "ms", "baseline": None, "baseline_value": None,
         "target": None, "met": None},
    ]


def run(quick: bool) -> list[dict[str, Any]]:
    """Entry point of the benchmark harness."""
    n = 1000 if quick else 5000
    kafka, database = os.environ.get("KP_KAFKA_BOOTSTRAP"), os.environ.get("KP_DATABASE_URL")
    if kafka and database:
        return asyncio.run(measure_all(kafka, database, n))
    stack = LocalStack(run_dir=ROOT / ".run" / f"bench-workflow-{os.getpid()}")
    stack.start_infra()
    try:
        assert stack.kafka_bootstrap
        assert stack.database_url
        return asyncio.run(measure_all(stack.kafka_bootstrap, stack.database_url, n))
    finally:
        stack.stop()
        shutil.rmtree(stack.run_dir, ignore_errors=True)


if __name__ == "__main__":
    import sys

    from bench.harness import table

    rows = run(quick="--quick" in sys.argv)
    print(table(rows))
