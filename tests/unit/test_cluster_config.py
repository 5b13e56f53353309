"""Configuration of the local multi-broker Kafka and the PostgreSQL pair, without starting anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from kp.cluster import KafkaCluster
from kp.pgreplica import PostgresPair
from kp.stack import KafkaNode, StackError, min_insync_replicas
from shared.kafka import USAGE_EVENTS, topic_config
from shared.settings import KPSettings


def _props(node: KafkaNode) -> dict[str, str]:
    lines = [line for line in node._properties().splitlines() if line and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


class TestTopicConfig:
    def test_three_replicas_need_two_in_sync(self) -> None:
        config = topic_config(USAGE_EVENTS, 3)
        assert config["min.insync.replicas"] == "2"
        assert config["retention.ms"] == USAGE_EVENTS.config["retention.ms"]

    def test_one_replica_keeps_the_topics_own_config(self) -> None:
        assert topic_config(USAGE_EVENTS, 1) == USAGE_EVENTS.config

    @pytest.mark.parametrize(("replication", "expected"), [(1, 1), (2, 1), (3, 2), (5, 2)])
    def test_min_insync_replicas(self, replication: int, expected: int) -> None:
        assert min_insync_replicas(replication) == expected


class TestClusterPlan:
    def test_three_nodes_share_cluster_id_and_quorum_on_distinct_ports(self, tmp_path: Path) -> None:
        cluster = KafkaCluster(tmp_path / "kc")
        cluster._plan()
        props = [_props(n) for n in cluster.nodes]
        assert [p["node.id"] for p in props] == ["1", "2", "3"]
        assert len({p["controller.quorum.voters"] for p in props}) == 1
        voters = props[0]["controller.quorum.voters"].split(",")
        assert [v.split("@")[0] for v in voters] == ["1", "2", "3"]
        assert len({n.cluster_id for n in cluster.nodes}) == 1
        ports = [port for n in cluster.nodes for port in (n.port, n.controller_port)]
        assert len(set(ports)) == 6
        assert all(p["default.replication.factor"] == "3" and p["min.insync.replicas"] == "2" for p in props)
        assert all(p["offsets.topic.replication.factor"] == "3" for p in props)
        assert cluster.bootstrap == ",".join(f"127.0.0.1:{n.port}" for n in cluster.nodes)

    def test_a_second_plan_reuses_cluster_id_and_free_ports(self, tmp_path: Path) -> None:
        first = KafkaCluster(tmp_path / "kc")
        first._plan()
        again = KafkaCluster(tmp_path / "kc")
        again._plan()
        assert again.nodes[0].cluster_id == first.nodes[0].cluster_id
        assert again.bootstrap == first.bootstrap

    def test_single_node_keeps_its_own_quorum(self, tmp_path: Path) -> None:
        node = KafkaNode(tmp_path / "k", port=1, controller_port=2)
        props = _props(node)
        assert props["controller.quorum.voters"] == "1@127.0.0.1:2"
        assert props["offsets.topic.replication.factor"] == "1"
        assert props["min.insync.replicas"] == "1"

    def test_no_nodes_is_refused(self, tmp_path: Path) -> None:
        with pytest.raises(StackError):
            KafkaCluster(tmp_path / "kc", size=0)


class TestMultiHostUrls:
    def test_pair_url_names_both_hosts_and_asks_for_the_writable_one(self, tmp_path: Path) -> None:
        pair = PostgresPair(tmp_path / "pg")
        pair.primary.port, pair.replica.port = 5001, 5002
        assert pair.url == ("postgresql://kp@127.0.0.1:5001,127.0.0.1:5002/kommunal_pulse"
                            "?target_session_attrs=read-write")

    def test_settings_split_a_broker_list(self) -> None:
        settings = KPSettings(kafka_bootstrap="127.0.0.1:1, 127.0.0.1:2,127.0.0.1:3")
        assert settings.kafka_servers == ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]
