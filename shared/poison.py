"""The poison/transient rule of every Kafka consumer (and of the outbox relay).

An error is either *data* (this record can never succeed: undecodable, a contract violation, a value the
database refuses) or *infrastructure* (broker or database unavailable, a transient conflict). Data errors send
the record to its topic's rejected topic and the partition moves on; infrastructure errors are retried with
backoff and commit nothing. A batch that fails for a reason nobody classified is split (`isolate`) until the
one bad record is found and rejected, while the others are applied as usual.

Decoding belongs to this rule: the subscribers use `raw_batch_parser`, which never fails on a header, so
nothing can fail before the consumer sees the raw records; importing this module installs the record reader of
`shared.kafka_records`, so that not even a header name that is not UTF-8 can make aiokafka fail first.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import asyncpg
import orjson
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, RecordTooLargeError
from asyncpg.exceptions._base import DataError as ClientDataError
from pydantic import ValidationError

from shared import kafka_records
from shared.rejections import MAX_ERROR_TEXT, Reason, rejected_payload, text

if TYPE_CHECKING:
    from faststream.kafka import KafkaRouter

kafka_records.install()  # header names that are not UTF-8 must not stall a consumer before this rule runs


class Kind(enum.StrEnum):
    DATA = "data"
    """The record itself is the problem; retrying cannot help."""
    INFRASTRUCTURE = "infrastructure"
    """A dependency is down or busy; retry with backoff, commit nothing."""
    UNKNOWN = "unknown"
    """Nobody classified it: bisect the batch; a single record that fails this way is set aside."""


# SQLSTATE classes that say nothing about the record: connection (08), resources (53), operator intervention
# (57), system (58), transaction rollback (40: serialization, deadlock), syntax/undefined objects (42: the
# schema is not migrated — a deployment problem that must not turn every record into a rejection), internal (XX).
_INFRA_SQLSTATE_CLASSES = ("08", "53", "57", "58", "40", "42", "XX")
_TRANSIENT_SQLSTATES = ("23505",)
"""A unique violation is a race between two writers of the same id during a rebalance: the redelivered batch
finds the id and does not insert it again."""


def classify(exc: BaseException) -> Kind:
    """Data, infrastructure or unknown (see `Kind`)."""
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", None) or ""
        if isinstance(exc, asyncpg.DataError) or state.startswith("22"):
            return Kind.DATA
        if state.startswith(_INFRA_SQLSTATE_CLASSES) or state in _TRANSIENT_SQLSTATES:
            return Kind.INFRASTRUCTURE
        return Kind.UNKNOWN
    if isinstance(exc, ClientDataError):  # client side: a value asyncpg cannot encode
        return Kind.DATA
    if isinstance(exc, MessageSizeTooLargeError | RecordTooLargeError):
        return Kind.DATA
    if isinstance(exc, KafkaError | asyncpg.InterfaceError | OSError | TimeoutError | asyncio.TimeoutError):
        return Kind.INFRASTRUCTURE
    if isinstance(exc, UnicodeError):
        return Kind.DATA
    return Kind.UNKNOWN


def reason_of(exc: BaseException) -> Reason:
    """The rejected-topic reason for a record that failed alone with `exc`."""
    if isinstance(exc, MessageSizeTooLargeError | RecordTooLargeError):
        return "oversize"
    if isinstance(exc, UnicodeError):
        return "undecodable"
    if classify(exc) is Kind.DATA and isinstance(exc, asyncpg.PostgresError | ClientDataError):
        return "database_refused"
    return "unprocessable"


def error_detail(exc: BaseException) -> list[dict[str, Any]]:
    """Machine-readable error detail for a rejected record (class name, SQLSTATE if any, bounded message)."""
    detail: dict[str, Any] = {"type": type(exc).__name__, "loc": [], "msg": text(str(exc), MAX_ERROR_TEXT)}
    state = getattr(exc, "sqlstate", None)
    if isinstance(state, str):
        detail["sqlstate"] = state
    return [detail]


R = TypeVar("R")


async def isolate(records: Sequence[R], apply: Callable[[Sequence[R]], Awaitable[None]],
                  reject: Callable[[R, BaseException], Awaitable[None]],
                  on_split: Callable[[int], None] | None = None) -> None:
    """Apply `records`, splitting on every failure that is not infrastructure until the bad record is alone.

    `apply` must be all-or-nothing (one transaction) and idempotent for records it applied before; the halves
    are applied in order, so positions per partition only move forward. An infrastructure error propagates
    (the caller retries the whole batch; what was applied is deduplicated). A record that fails alone is
    handed to `reject`.
    """
    try:
        await apply(records)
        return
    except Exception as exc:
        if classify(exc) is Kind.INFRASTRUCTURE:
            raise
        if len(records) == 1:
            await reject(records[0], exc)
            return
    if on_split is not None:
        on_split(len(records))
    mid = len(records) // 2
    await isolate(records[:mid], apply, reject, on_split)
    await isolate(records[mid:], apply, reject, on_split)


class ConsumedRecord(Protocol):
    """What the rule reads of a consumed record (aiokafka's ConsumerRecord)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def key(self) -> bytes | None: ...


@dataclasses.dataclass(frozen=True, slots=True)
class Rejection:
    """A consumed record that is set aside, with the reason for its rejected topic."""

    record: ConsumedRecord
    reason: Reason
    errors: list[dict[str, Any]]
    source: str | None = None
    event_id: str | None = None

    def payload(self, *, origin: str, consumer: str, max_bytes: int, now: datetime) -> tuple[bytes, bytes]:
        """(key, value) of its record in the rejected topic: position, key and headers as they came, bounded."""
        r = self.record
        return rejected_payload(
            max_bytes=max_bytes, reason=self.reason, raw=r.value or b"", origin=origin, consumer=consumer,
            errors=self.errors, platform=self.source, event_id=self.event_id, topic=r.topic, partition=r.partition,
            offset=r.offset, now=now, key=r.key, headers=headers_of(r), tombstone=r.value is None,
        )


def headers_of(record: Any) -> list[tuple[Any, Any]]:
    """The record's headers as they came (key, bytes), never decoded; [] if it has none."""
    return list(getattr(record, "headers", None) or ())


async def raw_batch_parser(msg: tuple[Any, ...], original: Callable[..., Any]) -> Any:
    """FastStream batch parser (the documented `parser=` hook) that cannot fail on record content.

    FastStream's own batch parser parses the batch as it is; it decodes every header value as UTF-8, so when it
    fails (a binary or null header value, rare), the batch is parsed again with its records' headers left out and
    the records as they came are set as the message's `raw_message`, which the handlers read (and FastStream's
    NACK uses to seek back every partition of the batch).
    """
    try:
        return await original(msg)
    except Exception:  # nothing in a record may keep it from the handler, where the poison rule decides
        parsed = await original(tuple(dataclasses.replace(r, headers=()) for r in msg))
        parsed.raw_message = msg
        return parsed


Publish = Callable[[bytes, bytes], Awaitable[Any]]
"""Sends one rejected record (key, value) to its rejected topic; returns once the broker has it."""


def rejected_publisher(router: KafkaRouter, topic: str, title: str, description: str) -> Publish:
    """The consumer's rejected topic as a FastStream publisher object of its router (so the AsyncAPI document
    names it), sending the JSON records of `shared.rejections`."""
    rejected = router.publisher(topic, title=title, description=description)

    async def publish(key: bytes, value: bytes) -> None:
        await rejected.publish(value, key=key, headers={"content-type": "application/json"})

    return publish


async def no_decode(_msg: Any) -> None:
    """Bodies are validated by the consumers from the raw bytes; skip FastStream's JSON decoding."""
    return None


def validation_errors(exc: ValidationError) -> tuple[Reason, list[dict[str, Any]]]:
    """Reason (`invalid_json` or `invalid_event`) and bounded details of a contract violation."""
    errors: list[dict[str, Any]] = [
        {"type": e["type"], "loc": [str(p) for p in e["loc"]], "msg": e["msg"]}
        for e in exc.errors(include_url=False, include_input=False)
    ]
    return ("invalid_json" if errors and errors[0]["type"] == "json_invalid" else "invalid_event"), errors


def declared(value: bytes | None) -> tuple[str | None, str | None]:
    """Best-effort `source` and `id` a payload declares (for a rejected record); never raises."""
    try:
        doc = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(doc, dict):
        return None, None
    source, event_id = doc.get("source"), doc.get("id")
    return (source if isinstance(source, str) else None), (event_id if isinstance(event_id, str) else None)
