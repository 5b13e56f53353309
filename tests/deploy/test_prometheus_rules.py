"""Alert and recording rules: valid for promtool, each alert unit-tested, each alert with a runbook section."""

from __future__ import annotations

import re
import subprocess
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import DEPLOY, ROOT, RULE_FILES, RULE_TESTS, all_rules
from tests.deploy.promql import metric_names


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT, check=False)


def _alert_tests() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = []
    for path in RULE_TESTS:
        for test in yaml.safe_load(path.read_text())["tests"]:
            cases.extend(test.get("alert_rule_test", []))
    return cases


class TestPromtool:
    def test_rule_files_pass_promtool_check(self, promtool: str) -> None:
        assert RULE_FILES, "no rule files under deploy/prometheus/rules"
        result = _run([promtool, "check", "rules", *map(str, RULE_FILES)])
        assert result.returncode == 0, result.stdout + result.stderr

    def test_rule_unit_tests_pass(self, promtool: str) -> None:
        assert RULE_TESTS, "no rule unit tests under deploy/prometheus/tests"
        result = _run([promtool, "test", "rules", *map(str, RULE_TESTS)])
        assert result.returncode == 0, result.stdout + result.stderr
        assert "SUCCESS" in result.stdout

    def test_compose_prometheus_config_is_valid(self, promtool: str) -> None:
        result = _run([promtool, "check", "config", "--syntax-only", str(DEPLOY / "prometheus" / "prometheus.yml")])
        assert result.returncode == 0, result.stdout + result.stderr

    def test_a_broken_threshold_is_caught_by_the_unit_tests(self, promtool: str, tmp_path: Any) -> None:
        """The unit tests really pin the thresholds: loosening one alert makes them fail."""
        (tmp_path / "rules").mkdir()
        (tmp_path / "tests").mkdir()
        rules = RULE_FILES[0].read_text()
        assert "> 0.05" in rules
        (tmp_path / "rules" / RULE_FILES[0].name).write_text(rules.replace("> 0.05", "> 0.5", 1))
        for test in RULE_TESTS:
            (tmp_path / "tests" / test.name).write_text(test.read_text())
        result = _run([promtool, "test", "rules", *[str(tmp_path / "tests" / t.name) for t in RULE_TESTS]])
        assert result.returncode != 0
        assert "KPIngestErrorRatioHigh" in result.stdout + result.stderr


ALERTS = [r["alert"] for r in all_rules() if "alert" in r]


class TestAlertCoverage:

    def test_the_required_alerts_exist(self) -> None:
        required = {
            "KPIngestErrorRatioHigh", "KPIngestUnavailable", "KPDeadLetterRateHigh", "KPConsumerLagHigh",
            "KPKpiFreshnessStale", "KPWorkflowCasesParked", "KPWorkflowTimerLag", "KPWorkflowOutboxLag",
            "KPDatabasePoolExhausted",
        }
        assert required <= set(ALERTS)

    @pytest.mark.parametrize("alert", ALERTS)
    def test_each_alert_has_a_firing_and_a_silent_unit_test(self, alert: str) -> None:
        cases = [c for c in _alert_tests() if c["alertname"] == alert]
        assert any(c.get("exp_alerts") for c in cases), f"{alert}: no test where it fires"
        assert any(not c.get("exp_alerts") for c in cases), f"{alert}: no test where it stays silent"

    @pytest.mark.parametrize("alert", ALERTS)
    def test_each_alert_has_a_runbook_section(self, alert: str) -> None:
        rule = next(r for r in all_rules() if r.get("alert") == alert)
        assert rule["annotations"]["runbook"] == f"docs/operations.md#{alert.lower()}"
        assert rule["labels"]["severity"] in {"warning", "critical"}
        doc = (ROOT / "docs" / "operations.md").read_text()
        section = re.search(rf"^#### {alert}\n(.*?)(?=^#|\Z)", doc, re.S | re.M)
        assert section, f"docs/operations.md has no '#### {alert}' section"
        for part in ("Meaning", "Check", "Fix"):
            assert f"**{part}**" in section.group(1), f"{alert}: runbook lacks '{part}'"

    def test_every_rule_expression_parses_and_uses_project_metrics(self) -> None:
        for rule in all_rules():
            names = metric_names(rule["expr"])
            assert names, rule
            assert all(n == "up" or n.startswith(("kp_", "kp:")) for n in names), (rule.get("alert"), names)
