"""The whole system on one machine: infrastructure, migrations, topics and the four services as processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from kp import keycloak
from kp.cluster import KafkaCluster
from kp.keycloak import KeycloakNode
from kp.pgreplica import PostgresPair
from kp.stack import (
    OPTIONAL_COMPONENTS,
    Component,
    ComponentFactory,
    KafkaNode,
    PostgresNode,
    StackError,
    _pid_alive,
    _stop_pid,
    free_port,
    port_is_free,
)
from shared.db import migrate
from shared.kafka import ensure_topics

SERVICES = ("ingest", "aggregator", "publisher", "workflow")
DEFAULT_PORTS = {"ingest": 8001, "aggregator": 8002, "publisher": 8003, "workflow": 8004}
DEMO_HISTORY_DAYS = 400
STACK_ENV = {"KP_LATE_HORIZON_DAYS": str(DEMO_HISTORY_DAYS + 7)}
"""Environment of the services in `kp stack up` only: the late horizon covers the demo history, so the 13
months are sent through the normal ingest path (the production default stays 7 days, see ADR 0030)."""


@dataclass
class ServiceProcess:
    """One service started as `python -m services.<name>` with its environment."""

    name: str
    port: int
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child process
        env = dict(os.environ, **self.env, KP_PORT=str(self.port))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", f"services.{self.name}"], env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise StackError(f"{self.name} exited with {self.proc.returncode}; see {self.log_path}")
            try:
                r = httpx.get(f"{self.url}/readyz", timeout=2)
                if r.status_code == 200:
                    return
                last = r.text
            except httpx.HTTPError as exc:
                last = str(exc)
            time.sleep(0.2)
        tail = self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""
        raise StackError(f"{self.name} not ready after {timeout:.0f}s: {last}\n{tail}")

    def stop(self, timeout: float = 30.0) -> None:
        """Graceful stop (SIGTERM: drain, commit, close), SIGKILL only after the timeout."""
        if self.proc is None:
            return
        _stop_pid(self.proc.pid, timeout)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        self.proc = None

    def kill(self) -> None:
        """kill -9, for fault tests."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@dataclass
class LocalStack:
    """Kafka + PostgreSQL (own or given by KP_KAFKA_BOOTSTRAP / KP_DATABASE_URL) plus the services."""

    run_dir: Path
    kafka_bootstrap: str | None = None
    database_url: str | None = None
    fixed_ports: bool = False
    kafka: KafkaNode | None = None
    brokers: int = 1
    """Kafka brokers to start: 1 (one node) or 3 (a `KafkaCluster`, replication factor 3)."""
    cluster: KafkaCluster | None = None
    postgres: PostgresNode | None = None
    pg_replica: bool = False
    """PostgreSQL as a primary with a synchronous streaming replica; the services get a multi-host URL."""
    pg_pair: PostgresPair | None = None
    services: dict[str, ServiceProcess] = field(default_factory=dict)
    identity: bool = False
    """Also start Keycloak (the clerk view's identity provider) and point the workflow service at it."""
    keycloak: KeycloakNode | None = None
    components: list[Component] = field(default_factory=list)
    """Optional parts (see `kp.stack.OPTIONAL_COMPONENTS`) started after PostgreSQL and Kafka."""
    simulator_pid: int | None = None
    demo_key: str | None = None

    @classmethod
    def from_env(cls, run_dir: Path, fixed_ports: bool = False) -> LocalStack:
        return cls(run_dir=run_dir, kafka_bootstrap=os.environ.get("KP_KAFKA_BOOTSTRAP") or None,
                   database_url=os.environ.get("KP_DATABASE_URL") or None, fixed_ports=fixed_ports)

    def start_infra(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.run_dir, 0o755)
        if self.database_url is None and self.pg_replica:
            self.pg_pair = PostgresPair(self.run_dir / "postgres-pair")
            self.pg_pair.start()
            self.database_url = self.pg_pair.url
        elif self.database_url is None:
            self.postgres = PostgresNode(self.run_dir / "postgres")
            self.postgres.start()
            self.database_url = self.postgres.url
        if self.kafka_bootstrap is None and self.brokers > 1:
            self.cluster = KafkaCluster(self.run_dir / "kafka-cluster", size=self.brokers)
            self.cluster.start()
            self.kafka_bootstrap = self.cluster.bootstrap
        elif self.kafka_bootstrap is None:
            self.kafka = KafkaNode(self.run_dir / "kafka")
            self.kafka.start()
            self.kafka_bootstrap = self.kafka.bootstrap
        if self.identity:
            self.keycloak = keycloak.start_for_stack(self.run_dir, self.fixed_ports)
        asyncio.run(self.prepare())
        for component in self.components:
            component.start(self.database_url)
        self.write_state()

    async def prepare(self) -> None:
        """Migrations, then topics; both idempotent."""
        assert self.database_url
        assert self.kafka_bootstrap
        await migrate(self.database_url)
        await ensure_topics(self.kafka_bootstrap, replication=min(self.brokers, 3))

    @property
    def env(self) -> dict[str, str]:
        assert self.database_url
        assert self.kafka_bootstrap
        return {"KP_KAFKA_BOOTSTRAP": self.kafka_bootstrap, "KP_DATABASE_URL": self.database_url}

    def service(self, name: str, extra_env: dict[str, str] | None = None, port: int | None = None) -> ServiceProcess:
        if port is None:
            wanted = DEFAULT_PORTS[name]
            port = wanted if self.fixed_ports and port_is_free(wanted) else free_port()
        oidc = self.keycloak.workflow_env() if self.keycloak is not None and name == "workflow" else {}
        env = {**self.env, **oidc, **(extra_env or {})}
        sp = ServiceProcess(name, port, env, self.run_dir / "logs" / f"{name}.log")
        return sp

    @contextlib.contextmanager
    def running(self, name: str, extra_env: dict[str, str] | None = None, *,
                public_url: bool = False) -> Iterator[ServiceProcess]:
        """Start one service, wait until it is ready, stop it on exit."""
        sp = self.service(name, extra_env)
        if public_url:
            sp.env["KP_PUBLIC_BASE_URL"] = sp.url
        sp.start()
        try:
            sp.wait_ready()
            yield sp
        finally:
            sp.stop()

    def plan_services(self, names: tuple[str, ...] = SERVICES, extra_env: dict[str, str] | None = None) -> None:
        """Choose each service's port and environment; the publisher's actual URL is its public base URL."""
        env = dict(extra_env or {})
        for component in self.components:
            env.update(component.service_env())
        for name in names:
            self.services[name] = self.service(name, env)
        if "publisher" in self.services:
            publisher = self.services["publisher"]
            publisher.env.setdefault("KP_PUBLIC_BASE_URL", publisher.url)

    def start_services(self, names: tuple[str, ...] = SERVICES, extra_env: dict[str, str] | None = None) -> None:
        """Start the services (see `plan_services`) and wait until each is ready."""
        self.plan_services(names, extra_env)
        for sp in self.services.values():
            sp.start()
        for sp in self.services.values():
            sp.wait_ready()
        self.write_state()

    def stop(self) -> None:
        for sp in reversed(list(self.services.values())):
            sp.stop()
        self.services.clear()
        if self.simulator_pid is not None:
            _stop_pid(self.simulator_pid)
            self.simulator_pid = None
        for component in reversed(self.components):
            component.stop()
        if self.kafka is not None:
            self.kafka.stop()
        if self.cluster is not None:
            self.cluster.stop()
        if self.keycloak is not None:
            self.keycloak.stop()
        if self.postgres is not None:
            self.postgres.stop()
        if self.pg_pair is not None:
            self.pg_pair.stop()
        (self.run_dir / "stack.json").unlink(missing_ok=True)

    def purge(self) -> None:
        """Stop, then delete the run folder and the database cluster's files (test stacks)."""
        self.stop()
        if self.postgres is not None:
            self.postgres.remove()
        if self.pg_pair is not None:
            self.pg_pair.remove()
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def urls(self) -> dict[str, str]:
        """Every user-facing URL of the running stack with its actual port, label -> URL."""
        out: dict[str, str] = {}
        pub = self.services.get("publisher")
        if pub is not None:
            out.update({
                "Dashboard": f"{pub.url}/dashboard",
                "Datenportal": f"{pub.url}/portal",
                "DCAT-AP.de catalog": f"{pub.url}/catalog",
                "Open-data API": f"{pub.url}/v1/kpis",
                "CKAN API": f"{pub.url}/api/3/action/package_search",
            })
        wf = self.services.get("workflow")
        if wf is not None:
            out["Sachbearbeitung (clerk view)"] = f"{wf.url}/sachbearbeitung"
        for component in self.components:
            out.update(component.urls())
        return out

    def start_simulator(self, rate: float, seed: int) -> None:
        """Demo traffic as a background process (`kp stack up --detach`); `kp stack down` ends it."""
        assert self.demo_key
        log_path = self.run_dir / "logs" / "simulator.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(log_path, "ab")  # noqa: SIM115 - handed to the child process
        env = dict(os.environ, KP_SIMULATOR_API_KEY=self.demo_key)
        proc = subprocess.Popen(
            [sys.executable, "-m", "kp.cli", "simulate", "--rate", str(rate), "--seed", str(seed),
             "--ingest-url", self.services["ingest"].url],
            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        self.simulator_pid = proc.pid
        self.write_state()

    def write_state(self) -> None:
        state = {
            "kafka_bootstrap": self.kafka_bootstrap, "database_url": self.database_url,
            "kafka_pid": self.kafka.proc.pid if self.kafka and self.kafka.proc else None,
            "kafka_cluster_pids": self.cluster.pids() if self.cluster else None,
            "postgres_dir": str(self.postgres.root) if self.postgres else None,
            "postgres_pair_dir": str(self.pg_pair.root) if self.pg_pair else None,
            "services": {n: {"url": s.url, "pid": s.proc.pid if s.proc else None} for n, s in self.services.items()},
            "components": [c.name for c in self.components],
            "urls": self.urls(),
            "simulator_pid": self.simulator_pid,
            "demo_key": self.demo_key,
        }
        path = self.run_dir / "stack.json"
        path.touch(mode=0o600)  # holds the demo ingest key
        path.write_text(json.dumps(state, indent=2))


def component_factories(demo: bool) -> list[ComponentFactory]:
    """The optional components of `kp stack up`: the demo E-Akte with the demo data, then the registered ones."""
    from kp.eakte import DemoEAkte

    return [*([DemoEAkte] if demo else []), *OPTIONAL_COMPONENTS]


def read_state(run_dir: Path) -> dict[str, object] | None:
    path = run_dir / "stack.json"
    return json.loads(path.read_text()) if path.exists() else None


def purge_data(run_dir: Path) -> None:
    """Delete a stopped stack's data: the database cluster (also when it lives outside) and the run folder."""
    PostgresNode(run_dir / "postgres").remove()
    PostgresPair(run_dir / "postgres-pair").remove()
    shutil.rmtree(run_dir, ignore_errors=True)


def service_url(state: dict[str, object], name: str) -> str | None:
    """The URL of a service of a running stack's state, if it has one."""
    services = state.get("services") or {}
    if isinstance(services, dict) and isinstance(services.get(name), dict):
        return str(services[name]["url"])
    return None


def pid_alive(pid: int) -> bool:
    return _pid_alive(pid)


def stop_from_state(run_dir: Path) -> list[str]:
    """Stop a stack started in the background by another process (`kp stack down`)."""
    state = read_state(run_dir)
    stopped: list[str] = []
    if state is None:
        return stopped
    services = state.get("services") or {}
    assert isinstance(services, dict)
    simulator_pid = state.get("simulator_pid")
    if isinstance(simulator_pid, int) and _pid_alive(simulator_pid):
        _stop_pid(simulator_pid)
        stopped.append("simulator")
    for name, info in services.items():
        pid = info.get("pid")
        if pid and _pid_alive(pid):
            _stop_pid(pid)
            stopped.append(name)
    started = state.get("components") or []
    assert isinstance(started, list)
    for factory in reversed(component_factories(demo=True)):
        component = factory(run_dir)
        if component.name in started:
            component.stop()
            stopped.append(component.name)
    if state.get("kafka_pid"):
        KafkaNode(run_dir / "kafka").stop()
        stopped.append("kafka")
    if state.get("kafka_cluster_pids"):
        KafkaCluster(run_dir / "kafka-cluster").stop()
        stopped.append("kafka cluster")
    if keycloak.stop_for_stack(run_dir):
        stopped.append("keycloak")
    if state.get("postgres_dir"):
        PostgresNode(Path(str(state["postgres_dir"]))).stop()
        stopped.append("postgres")
    if state.get("postgres_pair_dir"):
        PostgresPair(Path(str(state["postgres_pair_dir"]))).stop()
        stopped.append("postgres primary and replica")
    (run_dir / "stack.json").unlink(missing_ok=True)
    return stopped
