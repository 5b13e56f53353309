"""The poison/transient rule: classification, isolation of the bad record, bounded rejected records."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, get_args

import asyncpg
import orjson
import pytest
from aiokafka import ConsumerRecord
from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError
from asyncpg.exceptions._base import DataError as ClientDataError
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.poison import Kind, classify, isolate, raw_batch_parser, reason_of
from shared.rejections import (
    DEFAULT_MAX_RECORD_BYTES,
    MAX_HEADERS,
    REASONS,
    Reason,
    RejectedEvent,
    build_rejected,
    encode_rejected,
    rejected_payload,
)


class TestClassify:
    @pytest.mark.parametrize("exc", [
        asyncpg.CharacterNotInRepertoireError("invalid byte sequence for encoding \"UTF8\": 0x00"),
        asyncpg.UntranslatableCharacterError("unsupported Unicode escape sequence"),
        asyncpg.NumericValueOutOfRangeError("bigint out of range"),
        ClientDataError("invalid input for query argument $1"),
        MessageSizeTooLargeError(),
        UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
    ])
    def test_errors_of_the_record_are_data(self, exc: BaseException) -> None:
        assert classify(exc) is Kind.DATA

    @pytest.mark.parametrize("exc", [
        ConnectionRefusedError(), OSError("network unreachable"), TimeoutError(), KafkaConnectionError(),
        asyncpg.InterfaceError("connection is closed"), asyncpg.TooManyConnectionsError("too many clients"),
        asyncpg.CannotConnectNowError("the database system is starting up"), asyncpg.AdminShutdownError("bye"),
        asyncpg.DeadlockDetectedError("deadlock"), asyncpg.UniqueViolationError("duplicate key"),
        asyncpg.UndefinedTableError("relation does not exist"),
    ])
    def test_errors_of_a_dependency_are_infrastructure(self, exc: BaseException) -> None:
        assert classify(exc) is Kind.INFRASTRUCTURE

    @pytest.mark.parametrize("exc", [RuntimeError("bug"), KeyError("x"), asyncpg.CheckViolationError("check")])
    def test_anything_else_is_unknown(self, exc: BaseException) -> None:
        assert classify(exc) is Kind.UNKNOWN

    def test_reasons_name_what_happened(self) -> None:
        assert reason_of(asyncpg.CharacterNotInRepertoireError("0x00")) == "database_refused"
        assert reason_of(MessageSizeTooLargeError()) == "oversize"
        assert reason_of(RuntimeError("bug")) == "unprocessable"


@dataclass
class FakeStore:
    """All-or-nothing apply of a batch; records in `poison` fail with `error`, `down` fails everything."""

    poison: set[int]
    error: BaseException
    down: bool = False
    applied: list[int] | None = None
    attempts: int = 0

    async def apply(self, part: Sequence[int]) -> None:
        self.attempts += 1
        if self.down:
            raise ConnectionResetError("database unavailable")
        if self.poison & set(part):
            raise self.error
        self.applied = (self.applied or []) + list(part)


class TestIsolate:
    async def test_the_bad_record_is_rejected_and_the_rest_applied_in_order(self) -> None:
        store = FakeStore({37}, asyncpg.CharacterNotInRepertoireError("0x00"))
        rejected: list[tuple[int, str]] = []

        async def reject(r: int, exc: BaseException) -> None:
            rejected.append((r, reason_of(exc)))

        await isolate(list(range(100)), store.apply, reject)
        assert rejected == [(37, "database_refused")]
        assert store.applied == [i for i in range(100) if i != 37]
        assert store.attempts < 2 * 8 + 2  # logarithmic, not one transaction per record

    async def test_several_bad_records_are_each_isolated(self) -> None:
        store = FakeStore({0, 5, 99}, RuntimeError("unclassified"))
        rejected: list[int] = []

        async def reject(r: int, _exc: BaseException) -> None:
            rejected.append(r)

        await isolate(list(range(100)), store.apply, reject)
        assert rejected == [0, 5, 99]
        assert sorted(store.applied or []) == [i for i in range(100) if i not in {0, 5, 99}]

    async def test_an_infrastructure_error_propagates_and_rejects_nothing(self) -> None:
        store = FakeStore(set(), RuntimeError(), down=True)
        rejected: list[int] = []

        async def reject(r: int, _exc: BaseException) -> None:
            rejected.append(r)

        with pytest.raises(ConnectionResetError):
            await isolate(list(range(10)), store.apply, reject)
        assert rejected == []
        assert store.applied is None

    @settings(max_examples=60, deadline=None)
    @given(st.integers(1, 64).flatmap(lambda n: st.tuples(st.just(n), st.sets(st.integers(0, n - 1)))))
    async def test_exactly_the_bad_records_are_rejected(self, case: tuple[int, set[int]]) -> None:
        n, bad = case
        store = FakeStore(bad, ValueError("bad"))
        rejected: list[int] = []

        async def reject(r: int, _exc: BaseException) -> None:
            rejected.append(r)

        await isolate(list(range(n)), store.apply, reject)
        assert rejected == sorted(bad)
        assert store.applied is None or store.applied == [i for i in range(n) if i not in bad]


class TestBoundedRecord:
    def test_a_900_kb_record_with_huge_key_and_headers_fits_the_broker_limit(self) -> None:
        value = orjson.dumps({"id": "\u0000" * 300_000, "x": "y" * 600_000})
        headers = [(f"h{i}" * 200, bytes(range(256)) * 40) for i in range(100)]
        key, out = rejected_payload(reason="invalid_event", raw=value, origin="aggregator", key=b"\xff" * 500_000,
                                    headers=headers, event_id="\u0000" * 300_000, platform="p" * 100_000,
                                    errors=[{"type": "t", "loc": ["x" * 10_000] * 50, "msg": "\u0000" * 10_000}] * 50)
        assert len(key) + len(out) <= DEFAULT_MAX_RECORD_BYTES
        record = RejectedEvent.model_validate_json(out)
        assert record.raw_bytes == len(value)
        assert record.raw_truncated
        assert record.key_bytes == 500_000
        assert len(record.headers) == MAX_HEADERS
        assert record.headers_truncated
        assert not record.replayable

    @settings(max_examples=40, deadline=None)
    @given(value=st.binary(max_size=20_000), key=st.none() | st.binary(max_size=3000),
           headers=st.lists(st.tuples(st.text(max_size=300), st.none() | st.binary(max_size=2000)), max_size=40),
           limit=st.integers(2_000, 200_000))
    def test_every_record_fits_any_limit_and_round_trips(self, value: bytes, key: bytes | None,
                                                         headers: list[tuple[str, bytes | None]], limit: int) -> None:
        record = build_rejected(reason="undecodable", raw=value, origin="workflow", key=key, headers=headers,
                                topic="t", partition=0, offset=1)
        k, out = encode_rejected(record, limit)
        assert len(k) + len(out) <= limit
        parsed = RejectedEvent.model_validate_json(out)
        assert parsed.offset == 1
        if parsed.replayable:
            assert parsed.raw_value() == value
            assert parsed.raw_key() == key
            assert parsed.raw_headers() == headers

    def test_binary_payload_key_and_headers_are_kept_exactly(self) -> None:
        record = build_rejected(reason="invalid_json", raw=b"\xff\x00\xfe", origin="aggregator", key=b"\x80k",
                                headers=[("trace", b"\xc3\x28"), ("n", None)], topic="usage.events.v1")
        parsed = RejectedEvent.model_validate_json(encode_rejected(record)[1])
        assert parsed.replayable
        assert parsed.raw_value() == b"\xff\x00\xfe"
        assert base64.b64decode(parsed.key or "") == b"\x80k"
        assert parsed.headers[0].value == base64.b64encode(b"\xc3\x28").decode()
        assert parsed.headers[1].value is None
        assert parsed.raw_headers() == [("trace", b"\xc3\x28"), ("n", None)]

    def test_a_rejection_without_a_source_topic_is_not_replayable(self) -> None:
        assert not build_rejected(reason="invalid_event", raw=b"{}", origin="ingest").replayable

    def test_a_tombstone_is_marked_and_replays_as_one(self) -> None:
        parsed = RejectedEvent.model_validate_json(encode_rejected(
            build_rejected(reason="tombstone", raw=b"", origin="aggregator", tombstone=True))[1])
        assert parsed.tombstone
        assert parsed.raw_value() is None

    def test_the_reason_list_matches_the_record_model(self) -> None:
        assert get_args(Reason) == REASONS

    def test_records_of_the_first_version_still_parse(self) -> None:
        old = {"reason": "too_late", "errors": [], "origin": "aggregator", "platform": None, "event_id": None,
               "index": None, "rejected_at": "2026-01-01T00:00:00Z", "raw": "{}", "raw_bytes": 2,
               "raw_truncated": False, "topic": "usage.events.v1", "partition": 0, "offset": 3}
        parsed = RejectedEvent.model_validate(old)
        assert parsed.raw_value() == b"{}"
        assert parsed.headers == []


class TestRawBatchParser:
    """The consumers' parser around FastStream's own batch parser (the one its subscribers get)."""

    @staticmethod
    def faststream_parser() -> Any:
        from faststream.kafka.message import KafkaAckableMessage
        from faststream.kafka.parser import AioKafkaBatchParser

        return AioKafkaBatchParser(msg_class=KafkaAckableMessage, regex=None).parse_batch

    async def test_a_batch_whose_headers_decode_is_faststreams_own_message(self) -> None:
        records = tuple(ConsumerRecord("t", i % 2, i, 0, 0, b"k", b"v", None, 1, 1, [("content-type", b"json")])
                        for i in range(3))
        parsed = await raw_batch_parser(records, self.faststream_parser())
        assert parsed.raw_message is records
        assert parsed.body == [b"v", b"v", b"v"]

    async def test_binary_and_null_header_values_reach_the_handler_as_they_came(self) -> None:
        records = tuple(ConsumerRecord("t", 0, i, 0, 0, b"k", b"v", None, 1, 1, [("h", b"\xff\xfe"), ("n", None)])
                        for i in range(3))
        parsed = await raw_batch_parser(records, self.faststream_parser())
        assert parsed.raw_message is records
        assert [r.headers for r in parsed.raw_message] == [[("h", b"\xff\xfe"), ("n", None)]] * 3
