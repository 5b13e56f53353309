"""The local stack's demo E-Akte: files idempotently by key, refuses an unreadable scan, keeps its journal."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from kp.eakte import UNREADABLE, create_app

RECORD = {"case_id": "c1", "application_id": "a1", "municipality": "06413000", "service": "99115005104000",
          "definition": "wohnsitz-anmeldung", "definition_version": 1, "step": "akte", "decision": "approved",
          "documents": ["meldeschein"], "filed_at": "2026-03-01T10:00:00+00:00"}


class TestFile:
    def test_a_repeated_key_gets_the_same_reference_and_is_journalled_once(self, tmp_path: Path) -> None:
        journal = tmp_path / "journal.jsonl"
        client = TestClient(create_app(journal))
        first = client.put("/documents/k1", json=RECORD)
        assert first.status_code == 200
        again = client.put("/documents/k1", json=RECORD)
        assert again.json() == first.json()
        other = client.put("/documents/k2", json=RECORD)
        assert other.json()["reference"] != first.json()["reference"]
        assert len(journal.read_text().splitlines()) == 2
        restarted = TestClient(create_app(journal))  # the journal is the store: a restart knows the keys
        assert restarted.put("/documents/k1", json=RECORD).json() == first.json()

    def test_an_unreadable_scan_is_refused_so_the_workflow_parks_the_case(self, tmp_path: Path) -> None:
        client = TestClient(create_app(tmp_path / "journal.jsonl"))
        refused = client.put("/documents/k3", json={**RECORD, "documents": ["meldeschein", UNREADABLE]})
        assert refused.status_code == 422
        assert not (tmp_path / "journal.jsonl").exists()
