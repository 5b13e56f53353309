"""File-system E-Akte adapter: a group-committed journal keeps one document per idempotency key (counting every
call), ignores what a crash left half-written and isolates failing municipalities."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from xml.etree import ElementTree

from services.workflow.adapters import EAkteError, FileSystemEAkte, FilingRecord


def _record(municipality: str = "06413000", case: str = "c1") -> FilingRecord:
    return FilingRecord(
        case_id=case, application_id=f"APP-{case}", municipality=municipality, service="99115005104000",
        definition="wohnsitz_anmeldung", definition_version=1, step="ablage", decision=None,
        documents=["meldeformular"], filed_at=datetime(2026, 11, 25, 9, 0, tzinfo=UTC),
    )


def journal_folders(root: Path) -> set[str]:
    return {p.parent.name for p in root.rglob("journal-*.jsonl")}


def journal_lines(root: Path) -> list[bytes]:
    return [line for p in sorted(root.rglob("journal-*.jsonl")) for line in p.read_bytes().splitlines()]


class TestGroupFiling:
    async def test_same_key_filed_concurrently_gives_one_document_counting_every_call(self, tmp_path: Path) -> None:
        akte = FileSystemEAkte(tmp_path)
        refs = await asyncio.gather(*(akte.file("case-1:ablage", _record()) for _ in range(3)))
        assert len(set(refs)) == 1
        stored = akte.stored()
        assert list(stored) == ["case-1:ablage"]
        assert stored["case-1:ablage"]["calls"] == 3
        [segment] = (tmp_path / "06413000").iterdir()  # one journal segment, one line per call
        assert segment.name.startswith("journal-")
        assert segment.suffix == ".jsonl"
        assert len(segment.read_bytes().splitlines()) == 3
        akte.close()

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

    async def test_partial_line_left_by_a_crash_counts_as_not_filed(self, tmp_path: Path) -> None:
        # A crash in the middle of an append leaves a line without its newline; that call never returned.
        akte = FileSystemEAkte(tmp_path)
        await akte.file("k1", _record(case="c1"))
        akte.close()
        [segment] = (tmp_path / "06413000").glob("journal-*.jsonl")
        with segment.open("ab") as f:
            f.write(b'{"key": "k2", "reference": "eakte:06413000:k2", "rec')
        assert list(akte.stored()) == ["k1"]
        again = FileSystemEAkte(tmp_path)  # a restarted service writes a new segment, never after the partial line
        assert await again.file("k2", _record(case="c2")) == "eakte:06413000:k2"
        again.close()
        stored = again.stored()
        assert {k: d["calls"] for k, d in stored.items()} == {"k1": 1, "k2": 1}
        assert stored["k2"]["record"]["application_id"] == "APP-c2"
        assert len(list((tmp_path / "06413000").glob("journal-*.jsonl"))) == 2

    async def test_documents_of_the_one_file_per_key_layout_are_still_read(self, tmp_path: Path) -> None:
        (tmp_path / "06413000").mkdir()
        old = {"key": "k1", "reference": "eakte:06413000:k1", "calls": 2, "record": _record().as_dict()}
        (tmp_path / "06413000" / "k1.json").write_text(json.dumps(old))
        (tmp_path / "06413000" / "k2.json").write_text('{"key": "k2", "refer')  # partial: never reported filed
        akte = FileSystemEAkte(tmp_path)
        assert await akte.file("k1", _record()) == "eakte:06413000:k1"
        akte.close()
        assert {k: d["calls"] for k, d in akte.stored().items()} == {"k1": 3}

    async def test_a_segment_is_closed_when_full_and_counts_continue_in_the_next(self, tmp_path: Path) -> None:
        akte = FileSystemEAkte(tmp_path)
        akte.SEGMENT_BYTES = 1  # every group fills a segment
        for n in range(3):
            await akte.file("k1", _record(case=f"c{n}"))
        akte.close()
        assert len(list((tmp_path / "06413000").glob("journal-*.jsonl"))) == 3
        assert akte.stored()["k1"]["calls"] == 3

    async def test_many_keys_in_several_municipalities_in_one_group(self, tmp_path: Path) -> None:
        akte = FileSystemEAkte(tmp_path)
        cities = ["06413000", "06534014", "06531005"]
        refs = await asyncio.gather(*(akte.file(f"case-{i}:ablage", _record(cities[i % 3], f"c{i}"))
                                      for i in range(60)))
        assert refs == [f"eakte:{cities[i % 3]}:case-{i}:ablage" for i in range(60)]
        stored = akte.stored()
        assert len(stored) == 60
        assert {d["calls"] for d in stored.values()} == {1}
        assert len(journal_lines(tmp_path)) == 60
        assert journal_folders(tmp_path) == set(cities)
        akte.close()


class TestXdomeaExport:
    async def test_export_writes_one_xml_per_document_with_its_codes(self, tmp_path: Path) -> None:
        akte = FileSystemEAkte(tmp_path / "akte")
        await akte.file("case-1:ablage", _record("06413000", "c1"))
        await akte.file("case-2:ablage", _record("06534014", "c2"))
        assert akte.export_xdomea(tmp_path / "export") == 2
        root = ElementTree.parse(tmp_path / "export" / "06534014" / "case-2_ablage.xml").getroot()
        ns = {"x": "urn:kommunal-pulse:xdomea-export:1"}
        assert root.findtext("x:Identifikation/x:Aktenzeichen", namespaces=ns) == "APP-c2"
        assert root.findtext("x:Behoerde/x:AGS", namespaces=ns) == "06534014"
        assert root.findtext("x:Leistung/x:LeiKa", namespaces=ns) == "99115005104000"
        assert root.findtext("x:Dokument/x:ID", namespaces=ns) == "case-2:ablage"
        assert [a.text for a in root.findall("x:Dokument/x:Anlage", namespaces=ns)] == ["meldeformular"]
        assert (tmp_path / "export" / "06413000" / "case-1_ablage.xml").exists()

    async def test_no_call_is_stranded_when_a_writer_stops_as_it_arrives(self, tmp_path: Path) -> None:
        # Many cases filing one step after another: calls keep arriving just as a writer finds its queue empty.
        akte = FileSystemEAkte(tmp_path)

        async def case(n: int) -> list[str]:
            return [await akte.file(f"case-{n}:step-{i}", _record(case=f"{n}-{i}")) for i in range(8)]

        refs = await asyncio.wait_for(asyncio.gather(*(case(n) for n in range(40))), timeout=60)
        assert sum(len(r) for r in refs) == 320
        assert len(akte.stored()) == 320
        akte.close()
