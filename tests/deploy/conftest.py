"""Shared helpers for the deployment checks: repository paths and the rule files."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
RULE_FILES = sorted((DEPLOY / "prometheus" / "rules").glob("*.yml"))
RULE_TESTS = sorted((DEPLOY / "prometheus" / "tests").glob("*.test.yml"))


def load_rule_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = []
    for path in RULE_FILES:
        groups.extend(yaml.safe_load(path.read_text())["groups"])
    return groups


def all_rules() -> list[dict[str, Any]]:
    return [rule for group in load_rule_groups() for rule in group["rules"]]


@pytest.fixture(scope="session")
def promtool() -> str:
    """promtool comes from the Debian package `prometheus` (installed by `make setup`)."""
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: run `make setup` (Debian package `prometheus`)")
    return path
