"""Kafka plumbing: topic definitions, topic creation, producer factory."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Topic:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


USAGE_EVENTS = Topic("usage.events.v1", 6, {"retention.ms": str(7 * 86400_000)})
USAGE_REJECTED = Topic("usage.events.rejected.v1", 3, {"retention.ms": str(30 * 86400_000)})
APPLICATION_EVENTS = Topic("application.events.v1", 6, {"retention.ms": str(30 * 86400_000)})
WORKFLOW_EVENTS = Topic("workflow.events.v1", 6, {"retention.ms": str(30 * 86400_000)})
APPLICATION_REJECTED = Topic("application.events.rejected.v1", 3, {"retention.ms": str(30 * 86400_000)})
WORKFLOW_REJECTED = Topic("workflow.events.rejected.v1", 3, {"retention.ms": str(30 * 86400_000)})
ALL_TOPICS: tuple[Topic, ...] = (USAGE_EVENTS, USAGE_REJECTED, APPLICATION_EVENTS, WORKFLOW_EVENTS,
                                 APPLICATION_REJECTED, WORKFLOW_REJECTED)
REJECTED_TOPICS: dict[str, str] = {
    USAGE_EVENTS.name: USAGE_REJECTED.name,
    APPLICATION_EVENTS.name: APPLICATION_REJECTED.name,
    WORKFLOW_EVENTS.name: WORKFLOW_REJECTED.name,
}
"""Each consumed topic and the topic its rejected records go to."""


def topic_config(topic: Topic, replication: int) -> dict[str, str]:
    """The topic's configuration on a cluster with `replication` copies: with 3 copies an `acks=all` write
    needs 2 of them (one broker may fail without losing an acknowledged record or refusing writes), as in
    the Kubernetes overlay (`deploy/k8s/base/kafka/topics.yaml`)."""
    if replication >= 3:
        return {**topic.config, "min.insync.replicas": "2"}
    return dict(topic.config)


async def ensure_topics(
    bootstrap: str, topics: tuple[Topic, ...] = ALL_TOPICS, replication: int = 1,
    client_options: dict[str, object] | None = None,
) -> list[str]:
    """Create missing topics with explicit partitions; return the names created.

    With three or more replicas a topic also gets `min.insync.replicas=2` (see `topic_config`).
    `client_options` are extra aiokafka connection options (authentication, see `KPSettings`).
    """
    admin = AIOKafkaAdminClient(**{**(client_options or {}), "bootstrap_servers": bootstrap})
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t.name not in existing]
        if missing:
            try:
                await admin.create_topics(
                    [NewTopic(t.name, t.partitions, replication, topic_configs=topic_config(t, replication))
                     for t in missing]
                )
            except TopicAlreadyExistsError:
                log.info("topics were created concurrently")
        return [t.name for t in missing]
    finally:
        await admin.close()


def make_producer(bootstrap: str, **overrides: object) -> AIOKafkaProducer:
    """A durable producer: acks from all in-sync replicas, idempotent, bounded linger."""
    options: dict[str, object] = {
        "bootstrap_servers": bootstrap,
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
        "compression_type": None,
        "request_timeout_ms": 10_000,
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)
