"""A local multi-broker Kafka: three KRaft nodes on loopback, each broker and controller at once (ADR 0070).

Each node is a `KafkaNode` with its own folder, ports and process; they share one cluster id and one static
controller quorum (`controller.quorum.voters`). Topics get replication factor 3 and `min.insync.replicas=2`,
the settings of the Kubernetes overlay.
"""

from __future__ import annotations

import concurrent.futures
import json
from dataclasses import dataclass, field
from pathlib import Path

from kp.stack import KafkaNode, StackError, base64_uuid, free_port, port_is_free


@dataclass
class KafkaCluster:
    """`size` combined broker+controller nodes under `root/node-<id>`, node ids 1..size."""

    root: Path
    size: int = 3
    heap: str = "384m"
    nodes: list[KafkaNode] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root = self.root.resolve()
        if self.size < 1:
            raise StackError("a Kafka cluster needs at least one node")

    @property
    def bootstrap(self) -> str:
        """All brokers, comma-separated: a client still finds the cluster when one of them is down."""
        return ",".join(node.bootstrap for node in self.nodes)

    @property
    def replication(self) -> int:
        return min(self.size, 3)

    def node(self, node_id: int) -> KafkaNode:
        return self.nodes[node_id - 1]

    def _plan(self) -> None:
        """Choose ports (reusing saved ones when free) and cluster id, and build the nodes."""
        self.root.mkdir(parents=True, exist_ok=True)
        state_file = self.root / "cluster.json"
        state: dict[str, object] = json.loads(state_file.read_text()) if state_file.exists() else {}
        saved = state.get("ports")
        ports: list[tuple[int, int]] = []
        if isinstance(saved, list) and len(saved) == self.size and all(
            port_is_free(p) and port_is_free(c) for p, c in saved
        ):
            ports = [(int(p), int(c)) for p, c in saved]
        else:
            ports = [(free_port(), free_port()) for _ in range(self.size)]
            if len({p for pair in ports for p in pair}) != 2 * self.size:
                ports = [(free_port(), free_port()) for _ in range(self.size)]
        cluster_id = str(state.get("cluster_id") or base64_uuid())
        state_file.write_text(json.dumps({"cluster_id": cluster_id, "ports": ports}))
        voters = ",".join(f"{i + 1}@127.0.0.1:{c}" for i, (_, c) in enumerate(ports))
        self.nodes = [
            KafkaNode(self.root / f"node-{i + 1}", port=p, controller_port=c, heap=self.heap, node_id=i + 1,
                      voters=voters, cluster_id=cluster_id, replication=self.replication)
            for i, (p, c) in enumerate(ports)
        ]

    def start(self, timeout: float = 120.0) -> None:
        """Start every node in parallel: a node's broker port opens only once the controller quorum has a
        leader, which needs a majority of the nodes up."""
        if not self.nodes:
            self._plan()
        pending = [n for n in self.nodes if not n.running()]
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(pending) or 1) as pool:
            futures = [pool.submit(n.start, timeout) for n in pending]
            errors = [f.exception() for f in futures]
        failed = [e for e in errors if e is not None]
        if failed:
            self.stop()
            raise StackError(f"Kafka cluster did not start: {failed[0]}") from failed[0]

    def stop(self) -> None:
        """Stop every node (also those started by another process, through their pid files)."""
        nodes = self.nodes or [KafkaNode(d) for d in sorted(self.root.glob("node-*")) if d.is_dir()]
        # All at once: stopped one by one, the last node waits for a quorum that has already gone.
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(nodes) or 1) as pool:
            list(pool.map(KafkaNode.stop, nodes))

    def pids(self) -> list[int | None]:
        return [n.proc.pid if n.proc is not None else None for n in self.nodes]
