"""Fetched Kafka records whose header names are not valid UTF-8 reach the consumer instead of stalling it.

aiokafka decodes every header *name* as strict UTF-8 while it unpacks a fetched record batch (both its C reader
and its Python reader). A record whose header name is arbitrary bytes — Java and Python clients cannot write one,
librdkafka-based tools such as kcat can — makes that unpacking raise `UnicodeDecodeError` before any parser of
ours runs, and the consumer fetches the same batch again forever: the partition stalls (ADR 0011).

`install()` replaces the record reader the consumer's fetcher uses (`aiokafka.consumer.fetcher.MemoryRecords`)
with `TolerantMemoryRecords`. It cuts the fetched bytes into batches itself, hands each batch to aiokafka's
own (C when available) batch class, and only when iterating a batch raises `UnicodeDecodeError` reads that one
batch again with `read_batch`, a small reader of the record batch format v2 (magic 2) that decodes header names
with `errors="surrogateescape"`: the exact bytes come back with `name.encode("utf-8", "surrogateescape")`.
Batches that decode (all of them, normally) cost one list per batch more than aiokafka alone.

It can be removed once aiokafka tolerates such header names (keeps them as bytes or decodes them leniently):
the unit test `test_aiokafka_alone_cannot_read_a_header_name_that_is_not_utf8` then fails (ADR 0011).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aiokafka.consumer.fetcher as _fetcher
from aiokafka import codec
from aiokafka.errors import CorruptRecordException, UnsupportedCodecError
from aiokafka.record.default_records import DefaultRecordBatch
from aiokafka.record.legacy_records import LegacyRecordBatch

# Record batch v2 header (Kafka protocol, "Record Batch"): every field is big-endian.
_BATCH_HEADER = struct.Struct(">qiibIhiqqqhii")
"""baseOffset, batchLength, partitionLeaderEpoch, magic, crc, attributes, lastOffsetDelta, baseTimestamp,
maxTimestamp, producerId, producerEpoch, baseSequence, recordsCount."""
_LOG_OVERHEAD = 12  # baseOffset (int64) + batchLength (int32): the same in every message format
_MAGIC_AT = 16  # baseOffset, batchLength, partitionLeaderEpoch (v2) / crc (v0, v1), then magic
_COMPRESSION_MASK = 0x07
_LOG_APPEND_TIME = 0x08
_CONTROL = 0x20

HeaderList = list[tuple[str, bytes | None]]


@dataclass(frozen=True, slots=True)
class Record:
    """One record of a batch, in the shape aiokafka's fetcher reads (`DefaultRecord`)."""

    offset: int
    timestamp: int
    timestamp_type: int
    key: bytes | None
    value: bytes | None
    headers: HeaderList

    @property
    def checksum(self) -> None:
        return None


def _decompress(compression: int, data: bytes) -> bytes:
    if compression == 0:
        return data
    if compression == 1 and codec.has_gzip():
        return bytes(codec.gzip_decode(data))
    if compression == 2 and codec.has_snappy():
        return bytes(codec.snappy_decode(data))
    if compression == 3 and codec.has_lz4():
        return bytes(codec.lz4_decode(data))
    if compression == 4 and codec.has_zstd():
        return bytes(codec.zstd_decode(data))
    raise UnsupportedCodecError(f"compression codec {compression} of a record batch is not available")


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """A zigzag-encoded varint (as in protocol buffers) and the position after it."""
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise CorruptRecordException("malformed varint in a record batch")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7


def _bytes_field(buf: bytes, pos: int) -> tuple[bytes | None, int]:
    """A varint length (-1 for null) followed by that many bytes."""
    length, pos = _varint(buf, pos)
    if length < 0:
        return None, pos
    end = pos + length
    if end > len(buf):
        raise CorruptRecordException("record field runs past the end of its batch")
    return buf[pos:end], end


def read_batch(batch: bytes | bytearray | memoryview) -> list[Record]:
    """The records of one record batch v2, header names decoded with `surrogateescape`.

    Control batches (transaction markers) yield nothing, as in aiokafka's fetcher, which skips them.
    """
    buf = bytes(batch)
    if len(buf) < _BATCH_HEADER.size:
        raise CorruptRecordException("record batch shorter than its header")
    (base_offset, _length, _epoch, magic, _crc, attributes, _last_delta, base_ts, max_ts, _pid, _pepoch, _seq,
     count) = _BATCH_HEADER.unpack_from(buf, 0)
    if magic != 2:
        raise CorruptRecordException(f"record batch magic {magic}, expected 2")
    if attributes & _CONTROL:
        return []
    timestamp_type = 1 if attributes & _LOG_APPEND_TIME else 0
    data = _decompress(attributes & _COMPRESSION_MASK, buf[_BATCH_HEADER.size:])
    records: list[Record] = []
    pos = 0
    for _ in range(count):
        length, pos = _varint(data, pos)
        end = pos + length
        pos += 1  # record attributes (unused)
        ts_delta, pos = _varint(data, pos)
        offset_delta, pos = _varint(data, pos)
        key, pos = _bytes_field(data, pos)
        value, pos = _bytes_field(data, pos)
        n_headers, pos = _varint(data, pos)
        headers: HeaderList = []
        for _h in range(n_headers):
            name, pos = _bytes_field(data, pos)
            header_value, pos = _bytes_field(data, pos)
            if name is None:
                raise CorruptRecordException("record header with a null name")
            headers.append((name.decode("utf-8", "surrogateescape"), header_value))
        if pos != end:
            raise CorruptRecordException("record length does not match its fields")
        records.append(Record(offset=base_offset + offset_delta,
                              timestamp=max_ts if timestamp_type else base_ts + ts_delta,
                              timestamp_type=timestamp_type, key=key, value=value, headers=headers))
    return records


class TolerantBatch:
    """aiokafka's batch (C when available), re-read by `read_batch` if its header names do not decode."""

    __slots__ = ("_batch", "_buffer")

    def __init__(self, batch: Any, buffer: memoryview) -> None:
        self._batch = batch
        self._buffer = buffer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._batch, name)

    def __iter__(self) -> Iterator[Any]:
        try:
            return iter(list(self._batch))
        except UnicodeDecodeError:
            return iter(read_batch(self._buffer))

    def __next__(self) -> Any:  # the fetcher reads a control batch's marker with next()
        return next(self._batch)


class TolerantMemoryRecords:
    """The batches of a fetch response (`MemoryRecords` interface), magic-2 batches wrapped in `TolerantBatch`."""

    def __init__(self, bytes_data: bytes) -> None:
        self._buffer = memoryview(bytes_data)
        self._pos = 0
        self._next: memoryview | None = None
        self._advance()

    def _advance(self) -> None:
        buf, pos = self._buffer, self._pos
        self._next = None
        if len(buf) - pos < _LOG_OVERHEAD:
            return  # a partial batch at the end of a fetch: the fetcher fetches it again
        (length,) = struct.unpack_from(">i", buf, pos + 8)
        end = pos + _LOG_OVERHEAD + length
        if end > len(buf) or len(buf) - pos <= _MAGIC_AT:
            return
        self._next = buf[pos:end]
        self._pos = end

    def size_in_bytes(self) -> int:
        return len(self._buffer)

    def has_next(self) -> bool:
        return self._next is not None

    def next_batch(self) -> Any:
        view = self._next
        if view is None:
            return None
        self._advance()
        magic = view[_MAGIC_AT]
        if magic >= 2:
            return TolerantBatch(DefaultRecordBatch(view), view)
        return LegacyRecordBatch(view, magic)


def install() -> None:
    """Make every aiokafka consumer of this process read fetched batches with `TolerantMemoryRecords`."""
    _fetcher.MemoryRecords = TolerantMemoryRecords
