"""The local stack's bookkeeping: where PostgreSQL keeps its files, the URLs it prints, optional components."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from kp import local, stack
from kp.local import LocalStack, ServiceProcess


class FakeComponent:
    """An optional component as an identity provider would plug in (no process)."""

    name = "idp"

    def __init__(self, run_dir: Path, log: list[str]) -> None:
        self.run_dir, self.log = run_dir, log

    def start(self, database_url: str) -> None:
        self.log.append(f"start {database_url}")

    def stop(self) -> None:
        self.log.append("stop")

    def service_env(self) -> dict[str, str]:
        return {"KP_OIDC_ISSUER": "http://127.0.0.1:9999/realms/demo"}

    def urls(self) -> dict[str, str]:
        return {"Keycloak": "http://127.0.0.1:9999"}

    def notes(self) -> list[str]:
        return ["demo user: sb-offenbach"]


@pytest.fixture
def registered(tmp_path: Path) -> Iterator[list[str]]:
    log: list[str] = []
    stack.OPTIONAL_COMPONENTS.append(lambda run_dir: FakeComponent(run_dir, log))
    try:
        yield log
    finally:
        stack.OPTIONAL_COMPONENTS.pop()


class TestPgHome:
    def test_cluster_files_leave_a_private_folder_only_as_root(self, tmp_path: Path) -> None:
        home = stack.pg_home(tmp_path / "postgres")
        if os.geteuid() == 0:
            assert home.parent == stack.PG_SHARED_BASE
            assert home.name.startswith("kommunal-pulse-")
            assert home == stack.pg_home(tmp_path / "postgres")  # found again by `kp stack down`
            assert home != stack.pg_home(tmp_path / "other")
        else:
            assert home == tmp_path / "postgres"


class TestUrls:
    def test_every_user_facing_url_uses_the_actual_port_and_components_add_theirs(self, tmp_path: Path) -> None:
        s = LocalStack(run_dir=tmp_path, kafka_bootstrap="127.0.0.1:1", database_url="postgresql://x@127.0.0.1:2/d",
                       components=[FakeComponent(tmp_path, [])])
        s.services = {"publisher": ServiceProcess("publisher", 18003, {}, tmp_path / "p.log"),
                      "workflow": ServiceProcess("workflow", 18004, {}, tmp_path / "w.log")}
        urls = s.urls()
        assert urls["Dashboard"] == "http://127.0.0.1:18003/dashboard"
        assert urls["Datenportal"] == "http://127.0.0.1:18003/portal"
        assert urls["Sachbearbeitung (clerk view)"] == "http://127.0.0.1:18004/sachbearbeitung"
        assert urls["Keycloak"] == "http://127.0.0.1:9999"


class TestComponents:
    def test_down_stops_the_components_a_detached_stack_started(self, tmp_path: Path, registered: list[str]) -> None:
        (tmp_path / "stack.json").write_text(json.dumps({"services": {}, "components": ["idp"]}))
        assert local.stop_from_state(tmp_path) == ["idp"]
        assert registered == ["stop"]
        assert not (tmp_path / "stack.json").exists()

    def test_components_not_started_are_left_alone(self, tmp_path: Path, registered: list[str]) -> None:
        (tmp_path / "stack.json").write_text(json.dumps({"services": {}, "components": []}))
        assert local.stop_from_state(tmp_path) == []
        assert registered == []

    def test_simulate_finds_the_running_stack(self, tmp_path: Path) -> None:
        state = {"services": {"ingest": {"url": "http://127.0.0.1:18001", "pid": None}}}
        assert local.service_url(state, "ingest") == "http://127.0.0.1:18001"
        assert local.service_url(state, "publisher") is None


class TestPlan:
    def test_a_busy_default_port_moves_the_publisher_and_its_public_base_url_follows(self, tmp_path: Path) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            port = busy.getsockname()[1]
            s = LocalStack(run_dir=tmp_path, kafka_bootstrap="127.0.0.1:1", database_url="postgresql://x@h:2/d",
                           fixed_ports=True, components=[FakeComponent(tmp_path, [])])
            original = dict(local.DEFAULT_PORTS)
            local.DEFAULT_PORTS["publisher"] = port
            try:
                s.plan_services(("publisher", "workflow"), {"KP_LATE_HORIZON_DAYS": "403"})
            finally:
                local.DEFAULT_PORTS.update(original)
        publisher = s.services["publisher"]
        assert publisher.port != port
        assert publisher.env["KP_PUBLIC_BASE_URL"] == f"http://127.0.0.1:{publisher.port}"
        assert "KP_PUBLIC_BASE_URL" not in s.services["workflow"].env
        assert publisher.env["KP_LATE_HORIZON_DAYS"] == "403"
        assert s.services["workflow"].env["KP_OIDC_ISSUER"] == "http://127.0.0.1:9999/realms/demo"
