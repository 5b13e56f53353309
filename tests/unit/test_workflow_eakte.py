"""File-system E-Akte adapter: group commit keeps one document per idempotency key and isolates failures."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from xml.etree import ElementTree

import pytest

from services.workflow.adapters import EAkteError, FileSystemEAkte, FilingRecord


def _record(municipality: str = "06413000", case: str = "c1") -> FilingRecord:
    return FilingRecord(
        case_id=case, application_id=f"APP-{case}", municipality=municipality, service="99115005104000",
        definition="wohnsitz_anmeldung", definition_version=1, step="ablage", decision=None,
        documents=["meldeformular"], filed_at=datetime(2026, 11, 25, 9, 0, tzinfo=UTC),
    )


def temporary_files(root: Path) -> list[Path]:
    return list(root.rglob(".tmp-*"))


class TestGroupFiling:
    async def test_same_key_filed_concurrently_gives_one_document_counting_every_call(self, tmp_path: Path) -> None:
        akte = FileSystemEAkte(tmp_path)
        refs = await asyncio.gather(*(akte.file("case-1:ablage", _record()) for _ in range(3)))
        assert len(set(refs)) == 1
        stored = akte.stored()
        assert list(stored) == ["case-1:ablage"]
        assert stored["case-1:ablage"]["calls"] == 3
        assert sorted(p.name for p in (tmp_path / "06413000").iterdir()) == ["case-1_ablage.json"]

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


    async def test_partial_document_left_by_a_crash_counts_as_not_filed(self, tmp_path: Path) -> None:
        # A crash between creating the document and its fsync leaves a truncated file; that call never returned.
        (tmp_path / "06413000").mkdir()
        (tmp_path / "06413000" / "k1.json").write_text('{"key": "k1", "refer')
        akte = FileSystemEAkte(tmp_path)
        assert akte.stored() == {}
        reference = await akte.file("k1", _record())
        doc = akte.stored()["k1"]
        assert doc["reference"] == reference == "eakte:06413000:k1"
        assert doc["calls"] == 1
        assert doc["record"]["application_id"] == "APP-c1"

    async def test_many_keys_in_several_municipalities_in_one_group(self, tmp_path: Path) -> None:
        akte = FileSystemEAkte(tmp_path, writers=1)
        cities = ["06413000", "06534014", "06531005"]
        refs = await asyncio.gather(*(akte.file(f"case-{i}:ablage", _record(cities[i % 3], f"c{i}"))
                                      for i in range(60)))
        assert refs == [f"eakte:{cities[i % 3]}:case-{i}:ablage" for i in range(60)]
        stored = akte.stored()
        assert len(stored) == 60
        assert {d["calls"] for d in stored.values()} == {1}
        assert temporary_files(tmp_path) == []
        akte.close()


    async def test_a_dead_writer_fails_its_call_and_the_next_call_gets_a_fresh_writer(self, tmp_path: Path) -> None:
        import os

        akte = FileSystemEAkte(tmp_path, writers=1)
        await akte.file("k1", _record(case="c1"))
        [first] = akte.writer_pids()
        os.kill(first, signal.SIGKILL)
        with pytest.raises(EAkteError, match="writer stopped"):
            await akte.file("k2", _record(case="c2"))
        assert await akte.file("k2", _record(case="c2")) == "eakte:06413000:k2"
        assert akte.writer_pids() and first not in akte.writer_pids()
        assert {k: d["calls"] for k, d in akte.stored().items()} == {"k1": 1, "k2": 1}
        akte.close()
        assert akte.writer_pids() == []


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
        akte = FileSystemEAkte(tmp_path, writers=1)

        async def case(n: int) -> list[str]:
            return [await akte.file(f"case-{n}:step-{i}", _record(case=f"{n}-{i}")) for i in range(8)]

        refs = await asyncio.wait_for(asyncio.gather(*(case(n) for n in range(40))), timeout=60)
        assert sum(len(r) for r in refs) == 320
        assert len(akte.stored()) == 320
        akte.close()


KILLED_SERVICE = """
import asyncio, os, signal, sys
from datetime import UTC, datetime
from pathlib import Path
from services.workflow.adapters import FileSystemEAkte, FilingRecord

async def main() -> None:
    akte = FileSystemEAkte(Path(sys.argv[1]))
    await akte.file("k1", FilingRecord(
        case_id="c1", application_id="APP-c1", municipality="06413000", service="99115005104000",
        definition="wohnsitz_anmeldung", definition_version=1, step="ablage", decision=None,
        documents=[], filed_at=datetime.now(UTC)))
    print(*akte.writer_pids(), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)

if __name__ == "__main__":
    asyncio.run(main())
"""


def running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as status:
            return not any(line.startswith("State:") and "Z" in line for line in status)
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to look at processes")
def test_writer_process_ends_when_the_service_is_killed(tmp_path: Path) -> None:
    script = tmp_path / "service.py"
    script.write_text(KILLED_SERVICE)
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "akte")], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2], timeout=60, check=False)
    assert done.returncode == -signal.SIGKILL, done.stderr
    writers = [int(p) for p in done.stdout.split()]
    assert writers
    deadline = time.monotonic() + 15
    while any(running(p) for p in writers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(running(p) for p in writers)
