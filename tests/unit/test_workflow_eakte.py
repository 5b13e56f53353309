"""File-system E-Akte adapter: group commit keeps one document per idempotency key and isolates failures."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from services.workflow.adapters import EAkteError, FileSystemEAkte, FilingRecord


def _record(municipality: str = "06413000", case: str = "c1") -> FilingRecord:
    return FilingRecord(
        case_id=case, application_id=f"APP-{case}", municipality=municipality, service="99115005104000",
        definition="wohnsitz_anmeldung", definition_version=1, step="ablage", decision=None,
        documents=["meldeformular"], filed_at=datetime(2026, 11, 25, 9, 0, tzinfo=UTC),
    )


class TestGroupFiling:
    async def test_same_key_filed_concurrently_gives_one_document_counting_every_call(self, tmp_path: Path) -> None:
        akte = FileSystemEAkte(tmp_path)
        refs = await asyncio.gather(*(akte.file("case-1:ablage", _record()) for _ in range(3)))
        assert len(set(refs)) == 1
        stored = akte.stored()
        assert list(stored) == ["case-1:ablage"]
        assert stored["case-1:ablage"]["calls"] == 3
        assert (tmp_path / "06413000" / "case-1_ablage.xml").exists()

    async def test_refiling_after_a_restart_returns_the_same_reference(self, tmp_path: Path) -> None:
        first = await FileSystemEAkte(tmp_path).file("k1", _record())
        again = await FileSystemEAkte(tmp_path).file("k1", _record())
        assert first == again
        assert FileSystemEAkte(tmp_path).stored()["k1"]["calls"] == 2

    async def test_one_unwritable_item_fails_alone(self, tmp_path: Path) -> None:
        (tmp_path / "06534014").write_text("a file where the municipality folder should be")
        akte = FileSystemEAkte(tmp_path)
        good, bad = await asyncio.gather(
            akte.file("good", _record("06413000", "g")), akte.file("bad", _record("06534014", "b")),
            return_exceptions=True,
        )
        assert isinstance(good, str)
        assert isinstance(bad, EAkteError)
        assert list(akte.stored()) == ["good"]

    async def test_leftover_temporary_file_is_not_a_filed_document(self, tmp_path: Path) -> None:
        akte = FileSystemEAkte(tmp_path)
        await akte.file("k1", _record())
        (tmp_path / "06413000" / ".tmp-999-0").write_text('{"key": "ghost", "calls": 1}')
        assert list(akte.stored()) == ["k1"]

