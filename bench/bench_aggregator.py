"""Aggregator throughput: events/s folded exactly-once vs a naive per-event consumer and a raw Kafka drain.

Same run, same data: 3 x N mixed usage events are produced once to a fresh topic; then
  (2) a raw aiokafka consumer only drains the topic (upper bound of what Python can consume),
  (1) a naive consumer validates each event and inserts one row per event (autocommit),
  and two aggregator service processes in one consumer group (as deployed, one per core; exactly-once: dedup +
  KPI upserts + offsets per batch) fold it, timed from the moment their group is stable. One aggregator process
  folds N other events as a scaling reference.
Plus end-to-end freshness (ingest HTTP accept -> KPI row visible in PostgreSQL), p50/p99.

Run: `python -m bench.bench_aggregator [--quick]` (uses KP_KAFKA_BOOTSTRAP / KP_DATABASE_URL or its own stack).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from bench.harness import bench_stack
from kp.local import LocalStack, ServiceProcess
from services.aggregator import repository
from shared.events import usage_event_adapter
from shared.events.upcast import CURRENT_VERSIONS
from shared.kafka import USAGE_EVENTS, Topic, ensure_topics, make_producer
from shared.reference import configure_members

ROOT = Path(__file__).resolve().parent.parent
PARTITIONS = 6
INSTANCES = 2
"""Aggregator processes in the headline measure: one per core of the reference machine, as deployed."""
LATE_SHARE = 0.05
"""Share of events arriving late (up to three days); the rest happened in the last 15 minutes, as live traffic."""


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))]


def bench_keys(rnd: random.Random) -> tuple[list[str], list[str]]:
    """Six municipalities and eight services of the benchmark alone (accepted as extra members)."""
    return [f"99{rnd.randrange(10**6):06d}" for _ in range(6)], [f"99{rnd.randrange(10**12):012d}" for _ in range(8)]


def bench_members_env(*seeds: int) -> dict[str, str]:
    """`KP_EXTRA_*` for the keys `make_events(seed=...)` uses with these seeds."""
    municipalities: list[str] = []
    services: list[str] = []
    for seed in seeds:
        more_municipalities, more_services = bench_keys(random.Random(seed))
        municipalities += more_municipalities
        services += more_services
    return {"KP_EXTRA_MUNICIPALITIES": ",".join(municipalities), "KP_EXTRA_SERVICES": ",".join(services)}


def make_events(n: int, seed: int = 7) -> list[bytes]:
    """A realistic mix: page views and sessions with steps, auth, payment, submit/abandon, feedback.

    Six municipalities x eight services; 95 % of events from the last 15 minutes, 5 % late (up to 3 days).
    """
    rnd = random.Random(seed)
    municipalities, services = bench_keys(rnd)
    now = datetime.now(UTC)
    kinds: list[tuple[str, Any]] = [
        ("usage.page.viewed", lambda: {"page": f"/seite/{rnd.randrange(12)}", "device": rnd.choice(
            ["desktop", "mobile", "tablet"]), "referrer": rnd.choice(["search", "social", "internal", "direct"])}),
        ("usage.session.started", lambda: {"channel": rnd.choice(["web", "app"]), "device": "mobile"}),
        ("usage.step.completed", lambda: {"step": rnd.randint(1, 6), "step_name": "Schritt"}),
        ("usage.auth.completed", lambda: {"method": rnd.choice(["bundid_basis", "elster", "eid"]),
                                          "level": rnd.choice(["substantiell", "hoch"])}),
        ("usage.payment.completed", lambda: {"method": rnd.choice(["paypal", "sepa_lastschrift", "epaybl"]),
                                             "amount_cents": rnd.randrange(100, 9000)}),
        ("usage.session.submitted", lambda: {"duration_s": rnd.randrange(30, 5000)}),
        ("usage.session.abandoned", lambda: {"last_step": rnd.randrange(0, 6)}),
        ("usage.feedback.given", lambda: {"stars": rnd.randint(1, 5)}),
    ]
    weights = [30, 15, 30, 8, 5, 6, 4, 2]
    out: list[bytes] = []
    for _ in range(n):
        kind, data = rnd.choices(kinds, weights)[0]
        out.append(orjson.dumps({
            "id": str(uuid.UUID(int=rnd.getrandbits(128), version=4)), "type": kind,
            "schema_version": CURRENT_VERSIONS.get(kind, 1), "source": "bench",
            "time": (now - timedelta(seconds=rnd.randrange(0, 3 * 86400) if rnd.random() < LATE_SHARE
                                     else rnd.randrange(0, 900))).isoformat(),
            "municipality": rnd.choice(municipalities), "service": rnd.choice(services),
            "session": f"sess{rnd.getrandbits(64):016x}", "data": data(),
        }))
    return out


async def produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = make_producer(bootstrap, linger_ms=20, max_batch_size=256 * 1024)
    await producer.start()
    try:
        futures = []
        for v in values:
            doc = orjson.loads(v)
            futures.append(await producer.send(topic, v, key=f"{doc['municipality']}:{doc['service']}".encode()))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def drain(bootstrap: str, topic: str, n: int) -> float:
    """(2) Raw aiokafka consumer: only reads the records. Returns events/s."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"drain-{uuid.uuid4().hex}",
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        seen, started = 0, None
        while seen < n:
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            if started is None and batch:
                started = time.perf_counter()
            seen += sum(len(r) for r in batch.values())
        assert started is not None
        return n / (time.perf_counter() - started)
    finally:
        await consumer.stop()


async def naive(bootstrap: str, topic: str, database_url: str, limit: int, seconds: float) -> tuple[float, int]:
    """(1) Naive consumer: validate each event, insert one row per event (autocommit). Returns events/s, count."""
    conn = await asyncpg.connect(database_url)
    table = f"bench_naive_{uuid.uuid4().hex[:8]}"
    await conn.execute(f"""CREATE TABLE {table} (event_id uuid PRIMARY KEY, municipality text, service text,
                           type text, time timestamptz)""")
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"naive-{uuid.uuid4().hex}",
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        done, started = 0, None
        while done < limit:
            batch = await consumer.getmany(timeout_ms=500, max_records=500)
            if started is None and batch:
                started = time.perf_counter()
            for records in batch.values():
                for r in records:
                    e = usage_event_adapter.validate_json(r.value)
                    await conn.execute(
                        f"INSERT INTO {table} VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                        e.id, e.municipality, e.service, e.type, e.time)
                    done += 1
            if started is not None and time.perf_counter() - started > seconds:
                break
        assert started is not None
        return done / (time.perf_counter() - started), done
    finally:
        await consumer.stop()
        await conn.execute(f"DROP TABLE {table}")
        await conn.close()


async def stored(conn: asyncpg.Connection, group: str, topic: str) -> int:
    return int(await conn.fetchval(
        "SELECT coalesce(sum(next_offset), 0) FROM agg_offsets WHERE consumer_group = $1 AND topic = $2",
        group, topic))


async def exactly_once(stack: LocalStack, topic: str, n: int, instances: int = 1) -> tuple[float, dict[str, float]]:
    """`instances` aggregator processes in one consumer group fold the topic (exactly-once: dedup, KPI upserts
    and offsets per batch); rate measured from the first commit to the last."""
    assert stack.database_url
    uid = uuid.uuid4().hex[:8]
    group = f"bench-agg-{uid}"
    services = []
    for i in range(instances):
        sp = stack.service("aggregator", extra_env={
            "KP_USAGE_TOPIC": topic, "KP_CONSUMER_GROUP": group, "KP_CONSUME_WORKFLOW": "false",
            "KP_REJECTED_TOPIC": f"bench.rejected.{uid}", "KP_LOG_LEVEL": "WARNING", **bench_members_env(7, 8),
        })
        sp.log_path = sp.log_path.with_name(f"bench-aggregator-{uid}-{i}.log")
        services.append(sp)
    conn = await asyncpg.connect(stack.database_url)
    await ensure_topics(stack.kafka_bootstrap or "", (Topic(f"bench.rejected.{uid}", 1),))
    for sp in services:
        sp.start()
    try:
        # Measured once the group is stable with every instance in it, so the rate is not that of one instance
        # alone before the others joined (the records are already in the topic).
        await wait_for_group(stack.kafka_bootstrap or "", group, instances)
        first = await stored(conn, group, topic)
        t0 = time.perf_counter()
        if first > n // 2:
            raise RuntimeError(f"the consumer group became stable only after {first} of {n} records")
        last = first
        deadline = t0 + 600
        while last < n and time.perf_counter() < deadline:
            await asyncio.sleep(0.05)
            last = await stored(conn, group, topic)
        elapsed = time.perf_counter() - t0
        if last < n:
            raise RuntimeError(f"aggregator consumed only {last} of {n} records")
        metrics: dict[str, float] = {}
        for sp in services:
            for key, value in scrape(sp).items():
                metrics[key] = metrics.get(key, 0.0) + value
        return (n - first) / elapsed, metrics
    finally:
        for sp in services:
            sp.stop()
        await conn.close()


async def wait_for_group(bootstrap: str, group: str, members: int, timeout_s: float = 120.0) -> None:
    """Until the consumer group is stable with `members` members."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                [response] = await admin.describe_consumer_groups([group])
                [described] = response.to_object()["groups"]
                if described["state"] == "Stable" and len(described["members"]) == members:
                    return
            except KafkaError:
                pass  # the coordinator may not know the group yet
            await asyncio.sleep(0.02)
        raise TimeoutError(f"consumer group {group} did not become stable with {members} members")
    finally:
        await admin.close()


def scrape(sp: ServiceProcess) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(httpx.get(f"{sp.url}/metrics", timeout=10).text):
        for s in fam.samples:
            if s.name.endswith(("_sum", "_count", "_total")):
                key = s.name + ("" if not s.labels.get("outcome") else f"[{s.labels['outcome']}]")
                out[key] = out.get(key, 0.0) + s.value
    return out


async def freshness(stack: LocalStack, count: int) -> tuple[list[float], str | None]:
    """Ingest accept -> KPI visible: one event per request, each with its own service key."""
    assert stack.database_url
    assert stack.kafka_bootstrap
    ags = f"99{random.randrange(10**6):06d}"
    group = f"bench-fresh-{uuid.uuid4().hex[:8]}"
    # Start the new consumer group at the topic's end (via the stored offsets it seeks to), not its history.
    probe = AIOKafkaConsumer(bootstrap_servers=stack.kafka_bootstrap)
    await probe.start()
    try:
        parts = [TopicPartition(USAGE_EVENTS.name, p) for p in range(USAGE_EVENTS.partitions)]
        ends = await probe.end_offsets(parts)
    finally:
        await probe.stop()
    conn = await asyncpg.connect(stack.database_url)
    await repository.store_offsets(conn, group, {(tp.topic, tp.partition): off for tp, off in ends.items()})
    try:
        from bench.load import create_api_key

        api_key = await create_api_key(stack.database_url, "kp-bench-aggregator", [ags])
    except Exception as exc:
        return [], f"no ingest API key: {exc}"
    fresh_services = [f"99{random.randrange(10**12):012d}" for _ in range(count + 5)]
    members = {"KP_EXTRA_MUNICIPALITIES": ags, "KP_EXTRA_SERVICES": ",".join(fresh_services)}
    ingest = stack.service("ingest", members)
    agg = stack.service("aggregator", extra_env={"KP_CONSUMER_GROUP": group, "KP_CONSUME_WORKFLOW": "false",
                                                 "KP_LOG_LEVEL": "WARNING", **members})
    agg.log_path = agg.log_path.with_name(f"bench-fresh-aggregator-{group}.log")
    procs = [ingest, agg]
    try:
        for p in procs:
            p.start()
        for p in procs:
            p.wait_ready()
        accepted: dict[str, float] = {}
        visible: dict[str, float] = {}
        stop = asyncio.Event()

        async def poll() -> None:
            while not stop.is_set() or len(visible) < len(accepted):
                rows = await conn.fetch(
                    """SELECT service FROM kpi_values WHERE municipality = $1 AND granularity = 'hour'
                       AND metric = 'sessions_started'""", ags)
                t = time.perf_counter()
                for r in rows:
                    visible.setdefault(r["service"], t)
                await asyncio.sleep(0.005)

        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        poller = asyncio.create_task(poll())
        async with httpx.AsyncClient(base_url=ingest.url, timeout=30, headers=headers) as client:
            for i in range(count + 5):
                svc = fresh_services[i]
                event = {"id": str(uuid.uuid4()), "type": "usage.session.started", "source": "bench",
                         "time": datetime.now(UTC).isoformat(), "municipality": ags, "service": svc,
                         "session": f"sess{uuid.uuid4().hex[:16]}", "data": {"channel": "web", "device": "mobile"}}
                r = await client.post("/v1/events", json=[event])
                if r.status_code != 200:
                    stop.set()
                    poller.cancel()
                    return [], f"ingest answered {r.status_code}: {r.text[:200]}"
                if i >= 5:  # the first few warm up the consumer group
                    accepted[svc] = time.perf_counter()
                await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(poller, timeout=60)
        return [visible[s] - accepted[s] for s in accepted], None
    finally:
        for p in procs:
            p.stop()
        await conn.close()


async def measure(stack: LocalStack, quick: bool) -> list[dict[str, Any]]:
    assert stack.kafka_bootstrap
    assert stack.database_url
    n = 100_000 if quick else 300_000
    # Several instances start on a full topic: the first to join folds alone until the group has rebalanced
    # (a heartbeat interval and its batch in flight, a few seconds), which is left out of the measure; so they
    # get three times the records, and drain and naive read the same topic.
    n_main = 3 * n
    topic = f"bench.usage.{uuid.uuid4().hex[:8]}"
    # The one-instance reference folds events of its own (other ids, cities and services): on the first topic's
    # events it would only find duplicates.
    other = f"bench.usage.{uuid.uuid4().hex[:8]}"
    await ensure_topics(stack.kafka_bootstrap, (Topic(topic, PARTITIONS), Topic(other, PARTITIONS)))
    await produce(stack.kafka_bootstrap, topic, make_events(n_main))
    await produce(stack.kafka_bootstrap, other, make_events(n, seed=8))

    drain_rate = await drain(stack.kafka_bootstrap, topic, n_main)
    # The naive consumer validates in this process: like the aggregator, it accepts the benchmark's own members.
    configure_members(*bench_keys(random.Random(7)))
    naive_rate, naive_n = await naive(stack.kafka_bootstrap, topic, stack.database_url, n, 8 if quick else 20)
    eo_rate, metrics = await exactly_once(stack, topic, n_main, instances=INSTANCES)
    one_rate, _ = await exactly_once(stack, other, n, instances=1)
    lat, fresh_error = await freshness(stack, 40 if quick else 200)

    batches = metrics.get("kp_aggregator_batch_size_count", 0.0)
    rows: list[dict[str, Any]] = [
        {"measure": f"aggregator exactly-once fold, {INSTANCES} instances (events/s)", "value": round(eo_rate),
         "unit": "events/s",
         "baseline": f"naive consumer, one INSERT per event ({naive_n} events)",
         "baseline_value": round(naive_rate), "ratio": eo_rate / naive_rate, "target": ">= 20x naive",
         "met": eo_rate / naive_rate >= 20},
        {"measure": f"aggregator exactly-once fold, {INSTANCES} instances, vs raw drain (events/s)",
         "value": round(eo_rate),
         "unit": "events/s", "baseline": "raw aiokafka drain, no processing", "baseline_value": round(drain_rate),
         "ratio": eo_rate / drain_rate, "target": ">= 0.5x drain", "met": eo_rate / drain_rate >= 0.5},
        {"measure": "aggregator exactly-once fold, one instance (scaling reference; events of its own)",
         "value": round(one_rate), "unit": "events/s", "baseline": "naive consumer, one INSERT per event",
         "baseline_value": round(naive_rate), "ratio": one_rate / naive_rate, "target": None, "met": None},
        {"measure": "aggregator mean batch size", "value": round(n_main / batches) if batches else None,
         "unit": "records", "baseline": None, "baseline_value": None, "ratio": None, "target": None, "met": None},
    ]
    if batches:
        rows.append({"measure": "aggregator validate + fold per batch (worker thread)",
                     "value": round(1000 * metrics["kp_aggregator_fold_seconds_sum"] / batches, 1), "unit": "ms",
                     "baseline": None, "baseline_value": None, "ratio": None, "target": None, "met": None})
        rows.append({"measure": "aggregator transaction per batch (dedup + upserts + offsets, fold overlapped)",
                     "value": round(1000 * metrics["kp_aggregator_commit_seconds_sum"] / batches, 1), "unit": "ms",
                     "baseline": None, "baseline_value": None, "ratio": None, "target": None, "met": None})
    rows.append({"measure": "machine load average (1 min) at the end", "value": round(os.getloadavg()[0], 1),
                 "unit": "", "baseline": None, "baseline_value": None, "ratio": None, "target": None, "met": None})
    p50, p99 = percentile(lat, 0.5), percentile(lat, 0.99)
    rows.append({"measure": "freshness ingest accept -> KPI visible p50", "unit": "ms",
                 "value": round(p50 * 1000, 1) if p50 is not None else None, "baseline": None,
                 "baseline_value": None, "ratio": None, "target": None, "met": None,
                 **({"error": fresh_error} if fresh_error else {})})
    rows.append({"measure": "freshness ingest accept -> KPI visible p99", "unit": "ms",
                 "value": round(p99 * 1000, 1) if p99 is not None else None, "baseline": None,
                 "baseline_value": None, "ratio": None, "target": None, "met": None, "samples": len(lat)})
    return rows


def run(quick: bool) -> list[dict[str, Any]]:
    """Entry point of the harness; uses KP_KAFKA_BOOTSTRAP / KP_DATABASE_URL or starts its own stack."""
    with bench_stack("aggregator") as stack:
        return asyncio.run(measure(stack, quick))


def print_table(rows: list[dict[str, Any]]) -> None:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.2f}"
        return "" if v is None else str(v)

    cols = ("measure", "value", "unit", "baseline", "baseline_value", "ratio", "target", "met")
    table = [[fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in table)) for i, c in enumerate(cols)]
    print(" | ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    print("-+-".join("-" * w for w in widths))
    for t in table:
        print(" | ".join(v.ljust(w) for v, w in zip(t, widths, strict=True)))


if __name__ == "__main__":
    result = run(quick="--quick" in sys.argv)
    print_table(result)
    for row in result:
        print(json.dumps(row, default=str))
