"""Each service's /metrics passes `promtool check metrics`; rules and dashboards only use metrics that exist."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from kp.local import SERVICES, LocalStack, ServiceProcess
from shared.db import create_pool
from shared.observability import ops_router
from tests.deploy.conftest import DEPLOY, ROOT, all_rules
from tests.deploy.promql import metric_names, substitute_grafana

# Metrics the rules or dashboards use that a service does not export yet, each with the reason. An alert on a
# missing metric never fires, so this list must stay short and is reported to the service's owner.
PENDING: dict[str, str] = {}


@pytest.fixture(scope="module")
def running(stack: LocalStack) -> Iterator[dict[str, ServiceProcess]]:
    """The four services as processes against the real Kafka and PostgreSQL."""
    processes = [stack.service(name) for name in SERVICES]
    try:
        for sp in processes:
            sp.start()
        for sp in processes:
            sp.wait_ready(timeout=90)
        yield {sp.name: sp for sp in processes}
    finally:
        for sp in processes:
            sp.stop()


@pytest.fixture(scope="module")
def metrics_pages(running: dict[str, ServiceProcess]) -> dict[str, str]:
    """The /metrics text of the four services."""
    pages = {}
    for name, sp in running.items():
        response = httpx.get(f"{sp.url}/metrics", timeout=10)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        pages[name] = response.text
    return pages


def exposed_names(page: str) -> set[str]:
    """Sample names a scrape yields, from the `# TYPE` lines (labelled families appear before any sample)."""
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
                "summary": ("", "_sum", "_count", "_created"), "gauge": ("",), "untyped": ("",), "info": ("_info",),
                "stateset": ("",), "gaugehistogram": ("_bucket", "_gsum", "_gcount")}
    names: set[str] = set()
    for family, kind in re.findall(r"^# TYPE (\S+) (\S+)$", page, re.M):
        base = family.removesuffix("_total") if kind == "counter" else family
        names.update(base + suffix for suffix in suffixes[kind])
    return names


def dashboard_expressions() -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for path in sorted((DEPLOY / "grafana" / "dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                found.append((f"{path.name}: {panel['title']}", target["expr"]))
        for variable in dashboard.get("templating", {}).get("list", []):
            if variable.get("type") == "query":
                query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
                if inner := re.fullmatch(r"label_values\((.+),\s*\w+\)", query):
                    found.append((f"{path.name}: variable {variable['name']}", inner.group(1)))
    return found


class TestServiceMetrics:
    @pytest.mark.parametrize("name", SERVICES)
    def test_promtool_accepts_the_metrics_page(self, name: str, metrics_pages: dict[str, str],
                                               promtool: str) -> None:
        page = metrics_pages[name]
        assert f"kp_{name}_" in page or name == "publisher", f"{name} exports no kp_{name}_* metric"
        result = subprocess.run([promtool, "check", "metrics"], input=page, capture_output=True, text=True,
                                timeout=60, check=False)
        assert result.returncode == 0, result.stdout + result.stderr

    def test_rules_and_dashboards_use_only_exported_or_recorded_metrics(self, metrics_pages: dict[str, str]) -> None:
        exported = set().union(*(exposed_names(page) for page in metrics_pages.values()))
        recorded = {rule["record"] for rule in all_rules() if "record" in rule}
        used: dict[str, set[str]] = {}
        for rule in all_rules():
            for metric in metric_names(rule["expr"]):
                used.setdefault(metric, set()).add(f"rule {rule.get('alert') or rule.get('record')}")
        expressions = dashboard_expressions()
        assert expressions, "no dashboard queries found"
        for where, expr in expressions:
            for metric in metric_names(substitute_grafana(expr)):
                used.setdefault(metric, set()).add(where)
        missing = {m: sorted(w) for m, w in used.items()
                   if m not in exported | recorded | {"up"} | set(PENDING)}
        assert not missing, json.dumps(missing, indent=2)


class TestPoolMetrics:
    async def test_pool_usage_is_exported(self, database_url: str) -> None:
        registry = CollectorRegistry()
        ops_router(registry, {})
        pool = await create_pool(database_url, 1, 7)
        try:
            async with pool.acquire() as conn:
                assert isinstance(conn, asyncpg.pool.PoolConnectionProxy)
                page = generate_latest(registry).decode()
                assert re.search(r"^kp_db_pool_connections_max 7\.0$", page, re.M)
                assert re.search(r"^kp_db_pool_connections_in_use 1\.0$", page, re.M)
        finally:
            await pool.close()
        page = generate_latest(registry).decode()
        assert re.search(r"^kp_db_pool_connections_max 0\.0$", page, re.M)

    def test_a_registry_gets_the_pool_metrics_once(self, tmp_path: Path) -> None:
        registry = CollectorRegistry()
        ops_router(registry, {})
        ops_router(registry, {})
        assert generate_latest(registry).decode().count("# TYPE kp_db_pool_connections_max gauge") == 1


class TestHttpRequestMetrics:
    @pytest.mark.parametrize("name", SERVICES)
    def test_every_service_counts_and_times_requests_by_route_template(
        self, name: str, metrics_pages: dict[str, str]
    ) -> None:
        page = metrics_pages[name]
        # the readiness probe that waited for the process is counted under its template, method and status
        samples = [s for family in text_string_to_metric_families(page) if family.name == "kp_http_requests"
                   for s in family.samples if s.name == "kp_http_requests_total"]
        assert any(s.labels == {"route": "/readyz", "method": "GET", "code": "200"} and s.value >= 1
                   for s in samples), samples
        assert re.search(r'^kp_http_request_duration_seconds_bucket\{[^}]*route="/readyz"', page, re.M)



class TestAsyncApiOfRunningServices:
    def test_served_documents_pass_the_asyncapi_parser(self, running: dict[str, ServiceProcess],
                                                      tmp_path: Path) -> None:
        node = shutil.which("node")
        assert node, "node is required (make setup installs it)"
        files = []
        for name in ("ingest", "aggregator", "workflow"):
            doc = httpx.get(f"{running[name].url}/asyncapi.json", timeout=10).json()
            payloads = {m["payload"]["$ref"] for m in doc["components"]["messages"].values()}
            assert payloads, name
            assert not any(p.endswith("/EmptyPayload") for p in payloads), payloads
            path = tmp_path / f"{name}.json"
            path.write_text(json.dumps(doc))
            files.append(str(path))
        result = subprocess.run([node, str(ROOT / "tests" / "asyncapi_validate.mjs"), *files],
                                capture_output=True, text=True, timeout=120, cwd=ROOT, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
