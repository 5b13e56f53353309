"""`kp workflow validate`: names the bad file and field, exit code 1; lists the good ones."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from kp.cli import app
from services.workflow.definitions import DEFINITIONS_DIR


class TestValidateCommand:
    def test_shipped_definitions_are_listed(self) -> None:
        result = CliRunner().invoke(app, ["workflow", "validate"])
        assert result.exit_code == 0, result.output
        assert "ok  wohnsitz-anmeldung v1  service=99115005104000" in result.output

    def test_broken_definition_fails_with_file_and_field(self, tmp_path: Path) -> None:
        data = yaml.safe_load((DEFINITIONS_DIR / "hundesteuer-anmeldung.v1.yaml").read_text())
        data["steps"][2]["assignment"] = {"queues": []}
        (tmp_path / "hund.yaml").write_text(yaml.safe_dump(data))
        result = CliRunner().invoke(app, ["workflow", "validate", str(tmp_path)])
        assert result.exit_code == 1
        assert "hund.yaml" in result.output
        assert "steps.2.human.assignment.queues" in result.output
