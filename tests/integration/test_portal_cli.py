"""`kp datasets` against the publisher as a process: key, create from YAML with a file, update, withdraw."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from kp.cli import app
from kp.local import LocalStack, ServiceProcess
from tests.factories import MARBURG, OFFENBACH, portal_dataset

runner = CliRunner()



@pytest.fixture
def env(stack: LocalStack, publisher: ServiceProcess) -> dict[str, str]:
    return {**stack.env, "KP_PUBLISHER_URL": publisher.url}


def issue(env: dict[str, str], unique: str, ags: str) -> str:
    result = runner.invoke(app, ["datasets", "issue-key", "--label", f"cli-{unique}", "-m", ags], env=env)
    assert result.exit_code == 0, result.output
    key = result.stdout.strip().splitlines()[-1]
    assert key.startswith("kpp_")
    return key


class TestDatasetsCommands:
    def test_create_with_file_update_and_withdraw(
        self, env: dict[str, str], publisher: ServiceProcess, tmp_path: Path, unique: str
    ) -> None:
        key = issue(env, unique, OFFENBACH)
        (tmp_path / "parken.csv").write_text("standort,plaetze\nMarkt,12\n", encoding="utf-8")
        doc = portal_dataset(files=[{"path": "parken.csv", "title": "Parkplätze (CSV)"}])
        (tmp_path / "parken.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
        result = runner.invoke(app, ["datasets", "create", str(tmp_path / "parken.yaml"), "--key", key], env=env)
        assert result.exit_code == 0, result.output
        assert f"created {doc['name']} (version 1)" in result.output
        assert "uploaded parken.csv" in result.output
        got = httpx.get(f"{publisher.url}/v1/portal/datasets/{doc['name']}").json()
        assert [d["format"] for d in got["distributions"]] == ["JSON", "CSV"]

        doc.pop("files")
        doc["title"] = "Parkplätze und Parkhäuser"
        (tmp_path / "parken.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
        result = runner.invoke(app, ["datasets", "update", str(tmp_path / "parken.yaml"), "--key", key], env=env)
        assert result.exit_code == 0, result.output
        assert httpx.get(f"{publisher.url}/v1/portal/datasets/{doc['name']}").json()["title"] == doc["title"]

        result = runner.invoke(app, ["datasets", "withdraw", doc["name"]], env={**env, "KP_PORTAL_KEY": key})
        assert result.exit_code == 0, result.output
        assert httpx.get(f"{publisher.url}/v1/portal/datasets/{doc['name']}").status_code == 410

    def test_invalid_description_prints_each_field_and_fails(
        self, env: dict[str, str], tmp_path: Path, unique: str
    ) -> None:
        key = issue(env, unique, OFFENBACH)
        doc = portal_dataset(licence="proprietär", frequency="manchmal")
        (tmp_path / "bad.json").write_text(json.dumps(doc), encoding="utf-8")
        result = runner.invoke(app, ["datasets", "create", str(tmp_path / "bad.json"), "--key", key], env=env)
        assert result.exit_code == 1
        assert "licence:" in result.output
        assert "frequency:" in result.output

    def test_bad_csv_prints_the_frictionless_report(
        self, env: dict[str, str], tmp_path: Path, unique: str
    ) -> None:
        key = issue(env, unique, OFFENBACH)
        doc = portal_dataset()
        (tmp_path / "d.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
        assert runner.invoke(app, ["datasets", "create", str(tmp_path / "d.yaml"), "--key", key],
                             env=env).exit_code == 0
        (tmp_path / "kaputt.csv").write_text("a,b\n1\n", encoding="utf-8")
        result = runner.invoke(app, ["datasets", "upload", doc["name"], str(tmp_path / "kaputt.csv"), "--key", key],
                               env=env)
        assert result.exit_code == 1
        assert "missing-cell" in result.output

    def test_key_of_another_city_is_refused(self, env: dict[str, str], tmp_path: Path, unique: str) -> None:
        key = issue(env, unique, MARBURG)
        (tmp_path / "d.yaml").write_text(yaml.safe_dump(portal_dataset(), allow_unicode=True), encoding="utf-8")
        result = runner.invoke(app, ["datasets", "create", str(tmp_path / "d.yaml"), "--key", key], env=env)
        assert result.exit_code == 1
        assert "403" in result.output

    def test_malformed_file_is_a_usage_error(self, env: dict[str, str], tmp_path: Path) -> None:
        (tmp_path / "kaputt.json").write_text("{nicht json", encoding="utf-8")
        result = runner.invoke(app, ["datasets", "create", str(tmp_path / "kaputt.json"), "--key", "k"], env=env)
        assert result.exit_code == 2
        assert "not valid JSON" in result.output

    def test_unknown_municipality_gets_no_key(self, env: dict[str, str], unique: str) -> None:
        result = runner.invoke(app, ["datasets", "issue-key", "--label", f"x-{unique}", "-m", "06999999"], env=env)
        assert result.exit_code == 1
