"""Three brokers next to one: ingest and aggregator events/s on a three-node KRaft cluster (replication factor
3, `min.insync.replicas=2`, `acks=all`) and on a single broker, in the same run, with the same method.

Each side gets a stack of its own (Kafka and PostgreSQL); the single broker runs first, then the cluster.
Ingest: HTTP batches of 500 with 8 requests in flight, best of the rounds. Aggregator: one instance folds a
pre-produced topic of 6 partitions exactly-once, timed from the stable consumer group to the last stored
offset. On one machine the three brokers share its cores, so the cluster's replication traffic competes
with the services: the ratio is a lower bound for brokers on machines of their own.

    python -m bench.bench_cluster [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from bench.bench_aggregator import exactly_once, produce
from bench.bench_aggregator import make_events as usage_records
from bench.bench_ingest import batches, http_ingest, make_events, print_table
from kp.apikeys import create_key
from kp.local import LocalStack
from shared.kafka import Topic, ensure_topics
from shared.reference import municipalities

ROOT = Path(__file__).resolve().parent.parent


async def ingest_rate(stack: LocalStack, count: int, rounds: int) -> float:
    """Best events/s of `rounds` runs of `count` events through HTTP batch ingest."""
    assert stack.database_url
    api_key, _ = await create_key(stack.database_url, "kp-bench", [m.ags for m in municipalities()], 1e6,
                                  1_000_000, "benchmark")
    proc = stack.service("ingest", extra_env={"KP_LOG_LEVEL": "WARNING"})
    proc.start()
    try:
        await asyncio.to_thread(proc.wait_ready)
        await http_ingest(proc.url, api_key, batches(make_events(2_000), 500), 8)  # warm-up
        rates = []
        for _ in range(rounds):
            seconds, _ = await http_ingest(proc.url, api_key, batches(make_events(count), 500), 8)
            rates.append(count / seconds)
        return max(rates)
    finally:
        proc.stop()


async def aggregator_rate(stack: LocalStack, count: int) -> float:
    """Events/s one aggregator instance folds exactly-once from a pre-produced topic of 6 partitions."""
    assert stack.kafka_bootstrap
    topic = f"bench.cluster.{uuid.uuid4().hex[:8]}"
    await ensure_topics(stack.kafka_bootstrap, (Topic(topic, 6),), replication=min(stack.brokers, 3))
    await produce(stack.kafka_bootstrap, topic, usage_records(count, seed=7))
    rate, _ = await exactly_once(stack, topic, count, instances=1)
    return rate


RUN_DIR = ROOT / ".run" / f"bench-cluster-{os.getpid()}"


def measure_on(brokers: int, quick: bool) -> tuple[float, float]:
    run_dir = RUN_DIR / f"brokers-{brokers}"
    stack = LocalStack(run_dir=run_dir, brokers=brokers)
    stack.start_infra()
    try:
        ingest = asyncio.run(ingest_rate(stack, 10_000 if quick else 50_000, 1 if quick else 3))
        aggregator = asyncio.run(aggregator_rate(stack, 40_000 if quick else 200_000))
    finally:
        stack.stop()
    stack.purge()
    return ingest, aggregator


def run(quick: bool) -> list[dict[str, Any]]:
    """Benchmark entry point for the harness: rows of measure, value, unit, baseline, ratio, target, met."""
    one = measure_on(1, quick)
    three = measure_on(3, quick)
    shutil.rmtree(RUN_DIR, ignore_errors=True)
    rows = []
    for label, single, cluster in (
        ("HTTP batch ingest, 3 brokers (rf 3, min.insync.replicas=2, acks=all)", one[0], three[0]),
        ("aggregator exactly-once fold, 1 instance, 3 brokers (rf 3)", one[1], three[1]),
    ):
        rows.append({"measure": f"{label} (events/s)", "value": round(cluster), "unit": "events/s",
                     "baseline": "the same on 1 broker (rf 1), same run", "baseline_value": round(single),
                     "ratio": round(cluster / single, 3), "target": None, "met": None})
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer events, one round")
    print_table(run(parser.parse_args().quick))
