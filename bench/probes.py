"""Read-only probes of a running system: Kafka end offsets, aggregator lag, KPI counts, process RSS."""

from __future__ import annotations

from pathlib import Path

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from shared.kafka import USAGE_EVENTS

AGGREGATOR_GROUP = "kp-aggregator"
# One metric per usage event type that counts each event exactly once (see services/aggregator/fold.py).
COUNTING_METRICS = ("page_views", "sessions_started", "step_completed", "auth", "payment", "sessions_submitted",
                    "sessions_abandoned", "feedback")


def rss_mib(pid: int) -> float | None:
    """Resident set size of a process in MiB (VmRSS from /proc); None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


async def end_offsets(bootstrap: str, topic: str = USAGE_EVENTS.name) -> dict[int, int]:
    """Next offset to be written, per partition."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in sorted(partitions)])
    finally:
        await consumer.stop()
    return {tp.partition: off for tp, off in ends.items()}


async def aggregator_lag(bootstrap: str, database_url: str, topic: str = USAGE_EVENTS.name,
                         group: str = AGGREGATOR_GROUP) -> int:
    """Records on the topic the aggregator has not applied yet (its positions are stored in PostgreSQL)."""
    ends = await end_offsets(bootstrap, topic)
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT partition, next_offset FROM agg_offsets WHERE consumer_group = $1 AND topic = $2", group, topic
        )
    finally:
        await conn.close()
    stored = {r["partition"]: r["next_offset"] for r in rows}
    return sum(max(end - stored.get(p, 0), 0) for p, end in ends.items())


async def counted(database_url: str, municipality: str | None = None, service: str | None = None) -> int:
    """Events counted in the KPIs (day rows, all days), optionally for one municipality and service."""
    conn = await asyncpg.connect(database_url)
    try:
        value = await conn.fetchval(
            """SELECT coalesce(sum(value), 0) FROM kpi_values
               WHERE granularity = 'day' AND ($1::text IS NULL OR municipality = $1)
                 AND ($2::text IS NULL OR service = $2) AND metric = ANY($3::text[])""",
            municipality, service, list(COUNTING_METRICS),
        )
    finally:
        await conn.close()
    return int(value)
