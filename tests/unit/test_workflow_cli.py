"""`kp workflow validate`: names the bad file and field, exit code 1; lists the good ones. `export-xdomea`."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import yaml
from typer.testing import CliRunner

from kp.cli import app
from services.workflow.adapters import FileSystemEAkte, FilingRecord
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


class TestExportCommand:
    def test_filed_documents_are_exported_as_xml(self, tmp_path: Path) -> None:
        record = FilingRecord(
            case_id="c1", application_id="APP-0001", municipality="06531005", service="99115005104000",
            definition="wohnsitz_anmeldung", definition_version=1, step="ablage", decision=None,
            documents=["meldeformular"], filed_at=datetime(2026, 11, 25, 9, 0, tzinfo=UTC))
        akte = FileSystemEAkte(tmp_path / "akte")
        asyncio.run(akte.file("c1:ablage", record))
        akte.close()
        result = CliRunner().invoke(app, ["workflow", "export-xdomea", str(tmp_path / "out"),
                                          "--root", str(tmp_path / "akte")])
        assert result.exit_code == 0, result.output
        assert "1 documents exported" in result.output
        xml = (tmp_path / "out" / "06531005" / "c1_ablage.xml").read_text()
        assert "<Aktenzeichen>APP-0001</Aktenzeichen>" in xml
