"""`kp rejected`: choosing records (reason, time, source position) and refusing a replay without a choice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from typer.testing import CliRunner

from kp.cli import app
from kp.rejected_cmd import Found, select
from shared.rejections import build_rejected

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def found(offset: int, reason: str, minutes: int, rejected_offset: int) -> Found:
    record = build_rejected(reason=reason, raw=b"{}", origin="aggregator", topic="usage.events.v1",  # type: ignore[arg-type]
                            partition=0, offset=offset, now=T0 + timedelta(minutes=minutes))
    return Found("usage.events.rejected.v1", 0, rejected_offset, record)


RECORDS = [found(10, "invalid_event", 0, 0), found(11, "database_refused", 5, 1), found(12, "tombstone", 10, 2),
           Found("usage.events.rejected.v1", 0, 3, None)]


class TestSelect:
    def test_by_reason(self) -> None:
        assert [f.offset for f in select(RECORDS, ["database_refused", "tombstone"])] == [1, 2]

    def test_by_time(self) -> None:
        assert [f.offset for f in select(RECORDS, since=T0 + timedelta(minutes=5))] == [1, 2]

    def test_by_source_position(self) -> None:
        assert [f.source for f in select(RECORDS, positions=["usage.events.v1/0/12"])] == ["usage.events.v1/0/12"]

    def test_records_that_are_not_rejected_records_are_never_chosen(self) -> None:
        assert all(f.record is not None for f in select(RECORDS))
        assert len(select(RECORDS)) == 3


class TestReplayCommand:
    def test_a_replay_needs_a_choice(self) -> None:
        result = CliRunner().invoke(app, ["rejected", "replay", "--bootstrap", "127.0.0.1:1"])
        assert result.exit_code == 2
        assert "--reason" in result.output
