"""Grafana: provisioning files and dashboards are valid, every query parses as PromQL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import DEPLOY, ROOT
from tests.deploy.promql import metric_names, substitute_grafana

GRAFANA = DEPLOY / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


class TestProvisioning:
    def test_datasource_points_at_the_compose_prometheus(self) -> None:
        config = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
        (source,) = config["datasources"]
        assert source["type"] == "prometheus"
        compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
        assert source["url"] == "http://prometheus:9090"
        assert "prometheus" in compose["services"]

    def test_dashboard_provider_path_is_where_compose_mounts_the_dashboards(self) -> None:
        config = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "kommunal-pulse.yml").read_text())
        path = config["providers"][0]["options"]["path"]
        compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
        assert f"./deploy/grafana/dashboards:{path}:ro" in compose["services"]["grafana"]["volumes"]


class TestDashboards:
    def test_the_pipeline_and_workflow_dashboards_exist(self) -> None:
        assert {p.stem for p in DASHBOARDS} == {"kp-pipeline", "kp-workflow"}
        uids = [_load(p)["uid"] for p in DASHBOARDS]
        assert len(set(uids)) == len(uids)

    @pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
    def test_panels_are_well_formed(self, path: Path) -> None:
        dashboard = _load(path)
        assert dashboard["schemaVersion"] >= 36
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(set(ids)) == len(ids)
        variables = {v["name"] for v in dashboard["templating"]["list"]}
        for panel in dashboard["panels"]:
            assert panel["title"]
            assert {"x", "y", "w", "h"} <= set(panel["gridPos"])
            assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
            assert panel["datasource"]["uid"].strip("${}") in variables
            assert panel["targets"], panel["title"]

    @pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
    def test_every_query_parses_and_selects_project_metrics(self, path: Path) -> None:
        for panel in _load(path)["panels"]:
            for target in panel["targets"]:
                names = metric_names(substitute_grafana(target["expr"]))
                assert names, (panel["title"], target["expr"])
                assert all(n.startswith("kp_") for n in names), (panel["title"], names)

    def test_required_views_are_present(self) -> None:
        pipeline = json.dumps(_load(GRAFANA / "dashboards" / "kp-pipeline.json"))
        for metric in ("kp_ingest_events_accepted_total", "kp_ingest_events_rejected_total",
                       "kp_aggregator_consumer_lag", "kp_aggregator_events_total"):
            assert metric in pipeline
        assert "by (reason)" in pipeline
        workflow = json.dumps(_load(GRAFANA / "dashboards" / "kp-workflow.json"))
        for metric in ("kp_workflow_cases", "kp_workflow_step_latency_seconds_bucket", "kp_workflow_parked_cases"):
            assert metric in workflow

    def test_a_broken_query_is_detected(self) -> None:
        with pytest.raises(ValueError):  # noqa: PT011 - the parser's message varies by release
            metric_names(substitute_grafana("sum(rate(kp_x[$__rate_interval])"))
