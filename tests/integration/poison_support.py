"""Poison corpora and helpers of the poison tests (no tests here).

A corpus is a list of `Poison` cases, one line each: how to build the record from a valid event of the test's
lane, and what must happen to it (`None`: counted or applied; a reason: rejected with that reason). A case may
allow several outcomes where a contract rule added later turns a record the consumer accepts today into a
rejection (e.g. control characters in free strings).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from shared.rejections import RejectedEvent
from tests.waiting import eventually

Outcome = str | None
"""None: the record is counted/applied; otherwise the reason it is rejected with."""
Value = Callable[[dict[str, Any]], bytes | None]


def js(doc: Any) -> bytes:
    return orjson.dumps(doc)


def patched(**changes: Any) -> Value:
    """The valid event with some top-level fields replaced."""
    return lambda good: js({**good, **changes})


def patched_data(**changes: Any) -> Value:
    return lambda good: js({**good, "data": {**good["data"], **changes}})


def unchanged(good: dict[str, Any]) -> bytes:
    return js(good)


@dataclass(frozen=True)
class Poison:
    name: str
    value: Value
    outcomes: tuple[Outcome, ...]
    key: bytes | None = b"poison"
    headers: list[tuple[str, bytes]] = field(default_factory=list)


HUGE_ID = "9" * 480_000
NEAR_LIMIT = 900_000

# What every consumer must survive, whatever its contract (valid payload + broken transport, or a broken payload).
COMMON: list[Poison] = [
    Poison("binary header value", unchanged, (None,), headers=[("trace", b"\xff\xfe\x00\x80")]),
    Poison("non-UTF-8 key", unchanged, (None,), key=b"\xc3\x28\xff"),
    Poison("no key", unchanged, (None,), key=None),
    Poison("1000 headers", unchanged, (None,), headers=[(f"h{i}", b"\x00" * 10) for i in range(1000)]),
    Poison("300 KB header", unchanged, (None,), headers=[("big", b"\xfe" * 300_000)]),
    Poison("tombstone", lambda good: None, ("tombstone",)),
    Poison("empty value", lambda good: b"", ("invalid_json",)),
    Poison("non-UTF-8 value", lambda good: b"\xff\xfe{\"id\": 1}", ("invalid_json",)),
    Poison("binary value", lambda good: bytes(range(256)) * 4, ("invalid_json",)),
    Poison("NUL bytes only", lambda good: b"\x00" * 100, ("invalid_json",)),
    Poison("JSON array", lambda good: b"[1, 2, 3]", ("invalid_event",)),
    Poison("JSON string", lambda good: b'"usage"', ("invalid_event",)),
    Poison("JSON null", lambda good: b"null", ("invalid_event",)),
    Poison("JSON number", lambda good: b"1e999", ("invalid_event", "invalid_json")),
    Poison("deep nesting", lambda good: b"[" * 100_000 + b"]" * 100_000, ("invalid_json", "invalid_event")),
    Poison("lone surrogate escape", lambda good: js(good).replace(b'"source":"', b'"source":"\\ud800'),
           ("invalid_json", "invalid_event")),
    Poison("unknown type", patched(type="usage.unknown.happened"), ("invalid_event",)),
    Poison("unknown schema version", patched(schema_version=99), ("invalid_event",)),
    Poison("schema version as string", patched(schema_version="1"), ("invalid_event",)),
    Poison("id as number", patched(id=12345), ("invalid_event",)),
    Poison("time as epoch seconds", patched(time=1700000000), (None, "invalid_event", "too_late")),
    Poison("time without offset", patched(time="2026-01-01T10:00:00"), ("invalid_event",)),
    Poison("municipality as number", patched(municipality=6413000), ("invalid_event",)),
    Poison("NUL in municipality", patched(municipality="0641\u00003000"), ("invalid_event",)),
    Poison("NUL in source", patched(source="portal\u0000x"), ("invalid_event",)),
    Poison("control characters in source", patched(source="portal\u0007\u001b"), ("invalid_event",)),
    Poison("data as list", patched(data=[1]), ("invalid_event",)),
    Poison("unknown field", patched(extra_field=True), ("invalid_event",)),
    Poison("480 KB id", patched(id=HUGE_ID), ("invalid_event",)),
    Poison("record near the broker limit", patched(id="x" * NEAR_LIMIT), ("invalid_event",)),
    Poison("NUL-filled field near the limit", patched(source="\u0000" * (NEAR_LIMIT // 6)), ("invalid_event",)),
    Poison("unknown municipality", patched(municipality="99999999"), ("invalid_event",)),
    Poison("well-formed AGS of a non-member", patched(municipality="09162000"), ("invalid_event",)),
    Poison("unknown LeiKa key", patched(service="00000000000000"), ("invalid_event",)),
]

USAGE: list[Poison] = [
    *COMMON,
    Poison("NUL in page", patched_data(page="/antrag\u0000x"), ("invalid_event",)),
    Poison("control characters in page", patched_data(page="/antrag\u0001\u007f"), ("invalid_event",)),
    Poison("C1 control in page", patched_data(page="/antrag\u0085"), ("invalid_event",)),
    Poison("page over its bound", patched_data(page="/" + "\u00e4" * 2000), ("invalid_event",)),
    Poison("step as string", patched_data(step="1"), ("invalid_event",)),
    Poison("stars out of range", patched_data(stars=9), ("invalid_event",)),
]
"""Cases for `usage.events.v1`; built from a valid `usage.page.viewed` event of the lane."""

WORKFLOW: list[Poison] = [
    *COMMON,
    Poison("case id not a UUID", patched(case_id="case-1"), ("invalid_event",)),
    Poison("definition version as string", patched(definition_version="1"), ("invalid_event",)),
]
"""Cases for `workflow.events.v1`; built from a valid `workflow.case.opened` event of the lane."""

APPLICATION: list[Poison] = [
    *COMMON,
    Poison("NUL in application id", patched(application_id="APP-\u0000-1"), ("invalid_event",)),
    Poison("document list as string", patched_data(documents="lageplan"), ("invalid_event",)),
    Poison("fee as string", patched_data(fee_cents="12"), ("invalid_event",)),
]
"""Cases for `application.events.v1`; built from a valid `application.submitted` event."""


@dataclass
class Sent:
    case: Poison
    good: dict[str, Any]
    partition: int
    offset: int


async def send(bootstrap: str, topic: str, cases: list[Poison], good: Callable[[], dict[str, Any]],
               valid_after_each: int = 1, valid: Callable[[], dict[str, Any]] | None = None) -> list[Sent]:
    """Write each case followed by `valid_after_each` valid events (from `valid`, default `good`); return what
    was sent with its position. Valid filler events are returned as cases named `valid`."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=1_048_576)
    await producer.start()
    out: list[Sent] = []
    filler = Poison("valid", unchanged, (None,))
    try:
        for case in cases:
            for c, g in [(case, good()), *((filler, (valid or good)()) for _ in range(valid_after_each))]:
                key = c.key if c.key != b"poison" else f"{g.get('municipality', 'x')}:{g.get('service', 'y')}".encode()
                meta = await producer.send_and_wait(topic, c.value(g), key=key, headers=c.headers or None)
                out.append(Sent(c, g, meta.partition, meta.offset))
    finally:
        await producer.stop()
    return out


KCAT = shutil.which("kcat")
"""librdkafka's command line client: unlike the Java and Python clients, it writes header names as raw bytes."""


async def kcat_produce(bootstrap: str, topic: str, partition: int, value: bytes, *, key: bytes,
                       headers: list[tuple[bytes, bytes]]) -> None:
    """Write one record with kcat (value without a newline; header names and values as given bytes)."""
    assert KCAT is not None, "kcat is not installed (scripts/setup-system.sh)"
    args = [KCAT.encode(), b"-P", b"-b", bootstrap.encode(), b"-t", topic.encode(), b"-p", str(partition).encode(),
            b"-k", key, b"-X", b"acks=all"]
    for name, header_value in headers:
        args += [b"-H", name + b"=" + header_value]
    await asyncio.to_thread(subprocess.run, args, input=value, check=True, timeout=60)


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic)
                                                          or await _partitions(consumer, topic))]
        ends = await consumer.end_offsets(parts)
        return {tp.partition: o for tp, o in ends.items()}
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    await consumer._client.force_metadata_update()  # the first lookup of a topic needs fresh metadata
    return consumer.partitions_for_topic(topic) or set()


async def committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """Kafka's committed offsets of a consumer group (what the workflow consumer commits)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        ends = await end_offsets(bootstrap, topic)
        out: dict[int, int] = {}
        for p in ends:
            c = await consumer.committed(TopicPartition(topic, p))
            out[p] = c or 0
        return out
    finally:
        await consumer.stop()


async def read_rejected(bootstrap: str, topic: str, expected: int, timeout: float = 60) -> list[RejectedEvent]:
    """All records of a rejected topic, once at least `expected` are there (each checked against the model)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                group_id=f"read-{uuid.uuid4().hex}", max_partition_fetch_bytes=2_000_000)
    await consumer.start()
    seen: list[RejectedEvent] = []
    try:
        async def poll() -> list[RejectedEvent]:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                seen.extend(RejectedEvent.model_validate_json(r.value) for r in records if r.value is not None)
            return seen

        try:
            return await eventually(poll, lambda s: len(s) >= expected, timeout=timeout)
        except AssertionError:  # name what arrived, not the (huge) records
            got = sorted((r.partition or 0, r.offset or 0, r.reason) for r in seen)
            raise AssertionError(f"{len(seen)} of {expected} rejected records arrived: {got}") from None
    finally:
        await consumer.stop()


def check_outcomes(sent: list[Sent], rejected: list[RejectedEvent], topic: str) -> list[Sent]:
    """Assert every poison case ended as allowed and no valid record was rejected; return the applied ones."""
    by_position = {(r.partition, r.offset): r for r in rejected if r.topic == topic}
    applied: list[Sent] = []
    problems: list[str] = []
    for s in sent:
        r = by_position.get((s.partition, s.offset))
        outcome = None if r is None else r.reason
        if outcome not in s.case.outcomes:
            problems.append(f"{s.case.name}: {outcome} not in {s.case.outcomes}")
        if r is None:
            applied.append(s)
    assert not problems, problems
    return applied
