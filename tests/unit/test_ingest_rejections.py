"""The rejected-topic record format shared by ingest and the aggregator."""

from __future__ import annotations

import orjson

from shared.rejections import (
    MAX_ERRORS,
    MAX_RAW_BYTES,
    RejectedEvent,
    build_rejected,
    encode_rejected,
    rejected_payload,
)


class TestBuildRejected:
    def test_keeps_small_payload_whole_with_reason_and_position(self) -> None:
        record = build_rejected(reason="invalid_event", raw=b'{"id": 1}', origin="ingest", platform="civento",
                                index=3, errors=[{"type": "missing", "loc": ["time"], "msg": "Field required"}])
        assert record.raw == '{"id": 1}'
        assert record.raw_bytes == 9
        assert not record.raw_truncated
        assert record.index == 3
        assert record.errors[0]["loc"] == ["time"]

    def test_bounds_large_payload_and_remembers_original_length(self) -> None:
        raw = b"x" * (MAX_RAW_BYTES * 3)
        record = build_rejected(reason="invalid_json", raw=raw, origin="aggregator", topic="t", partition=1, offset=9)
        assert len(record.raw) == MAX_RAW_BYTES
        assert record.raw_bytes == len(raw)
        assert record.raw_truncated

    def test_parsed_payload_is_reserialised_as_json(self) -> None:
        record = build_rejected(reason="too_late", raw={"a": [1, 2]}, origin="ingest")
        assert orjson.loads(record.raw) == {"a": [1, 2]}

    def test_invalid_utf8_is_replaced_not_fatal(self) -> None:
        record = build_rejected(reason="invalid_json", raw=b"\xff\xfeabc", origin="aggregator")
        assert record.raw.endswith("abc")


class TestEncodeRejected:
    def test_round_trips_through_json_and_is_keyed_by_platform(self) -> None:
        key, value = rejected_payload(reason="forbidden_municipality", raw="{}", origin="ingest", platform="p1",
                                      event_id="e")
        assert key == b"p1"
        parsed = RejectedEvent.model_validate_json(value)
        assert parsed.reason == "forbidden_municipality"
        assert parsed.event_id == "e"

    def test_unknown_platform_gets_a_stable_key(self) -> None:
        key, _ = encode_rejected(build_rejected(reason="invalid_json", raw=b"", origin="aggregator"))
        assert key == b"unknown"


class TestBoundedErrors:
    def test_many_errors_are_cut_with_a_note(self) -> None:
        errors = [{"type": "extra_forbidden", "loc": ["x" * 1000], "msg": "m"} for _ in range(500)]
        record = build_rejected(reason="invalid_event", raw=b"{}", origin="ingest", errors=errors)
        assert len(record.errors) == MAX_ERRORS + 1
        assert record.errors[-1]["type"] == "too_many_errors"
        assert len(record.errors[0]["loc"][0]) == 200
