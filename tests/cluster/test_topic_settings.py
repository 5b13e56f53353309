"""The local three-broker cluster runs the topic and broker settings of the Kubernetes production overlay."""

from __future__ import annotations

from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from shared.kafka import ALL_TOPICS
from tests.cluster.conftest import ROOT, ClusterStack, describe
from tests.deploy.kustomize import render

PRODUCTION = ROOT / "deploy" / "k8s" / "overlays" / "production"
BROKER_KEYS = ("auto.create.topics.enable", "default.replication.factor", "min.insync.replicas",
               "offsets.topic.replication.factor", "transaction.state.log.replication.factor",
               "transaction.state.log.min.isr")


def _production() -> list[dict[str, Any]]:
    return render(PRODUCTION)


def _as_kafka_value(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


async def _configs(bootstrap: str, resources: list[ConfigResource]) -> dict[str, dict[str, str]]:
    """Resource name -> its configuration (name -> value)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        responses = await admin.describe_configs(resources)
    finally:
        await admin.close()
    out: dict[str, dict[str, str]] = {}
    for response in responses:
        for resource in response.resources:
            # (error_code, error_message, type, name, config entries (name, value, read_only, ...))
            assert resource[0] == 0, resource[1]
            out[resource[3]] = {entry[0]: entry[1] for entry in resource[4]}
    return out


class TestClusterMatchesKubernetes:
    async def test_every_topic_has_the_overlays_partitions_replicas_and_config(self, healthy: ClusterStack) -> None:
        overlay = {t["spec"]["topicName"]: t["spec"] for t in _production() if t["kind"] == "KafkaTopic"}
        assert set(overlay) == {t.name for t in ALL_TOPICS}
        names = sorted(overlay)
        configs = await _configs(healthy.bootstrap, [ConfigResource(ConfigResourceType.TOPIC, n) for n in names])
        assert set(configs) == set(names)
        for name, config in configs.items():
            spec = overlay[name]
            partitions = await describe(healthy.bootstrap, name)
            assert len(partitions) == spec["partitions"], name
            assert {len(p.replicas) for p in partitions.values()} == {spec["replicas"]}, name
            for key, value in spec["config"].items():
                assert config[key] == _as_kafka_value(value), (name, key)

    async def test_replicas_are_spread_over_all_three_brokers(self, healthy: ClusterStack) -> None:
        partitions = await describe(healthy.bootstrap)
        assert all(p.replicas == [1, 2, 3] for p in partitions.values())
        assert {p.preferred for p in partitions.values()} == {1, 2, 3}

    async def test_every_broker_has_the_overlays_broker_config(self, healthy: ClusterStack) -> None:
        kafka = next(o for o in _production() if o["kind"] == "Kafka")
        wanted = {k: _as_kafka_value(v) for k, v in kafka["spec"]["kafka"]["config"].items() if k in BROKER_KEYS}
        assert set(wanted) == set(BROKER_KEYS)
        pools = [o for o in _production() if o["kind"] == "KafkaNodePool"]
        assert sum(p["spec"]["replicas"] for p in pools) == len(healthy.kafka.nodes) == 3
        assert all(set(p["spec"]["roles"]) == {"broker", "controller"} for p in pools)
        configs = await _configs(healthy.bootstrap, [ConfigResource(ConfigResourceType.BROKER, str(n.node_id))
                                                     for n in healthy.kafka.nodes])
        assert len(configs) == 3
        for config in configs.values():
            assert {k: config[k] for k in BROKER_KEYS} == wanted
