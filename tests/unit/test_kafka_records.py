"""The tolerant record reader: batches whose header names are not UTF-8 are read whole, with exact bytes."""

from __future__ import annotations

import gzip
import struct
from typing import Any

import aiokafka.consumer.fetcher as fetcher
import orjson
import pytest
from aiokafka.record.default_records import DefaultRecordBatch
from aiokafka.record.util import calc_crc32c
from aiokafka.structs import TopicPartition

import shared.poison  # noqa: F401  (installs the tolerant reader)
from shared.kafka_records import TolerantMemoryRecords, read_batch
from shared.rejections import RejectedEvent, build_rejected, encode_rejected

Header = tuple[bytes, bytes | None]
Rec = tuple[int, bytes | None, bytes | None, list[Header]]  # timestamp delta, key, value, headers


def _varint(n: int) -> bytes:
    z = (n << 1) ^ (n >> 63)  # zigzag
    out = bytearray()
    while True:
        if z < 0x80:
            out.append(z)
            return bytes(out)
        out.append((z & 0x7F) | 0x80)
        z >>= 7


def _field(b: bytes | None) -> bytes:
    return _varint(-1) if b is None else _varint(len(b)) + b


def batch(base_offset: int, records: list[Rec], *, gzipped: bool = False, base_ts: int = 1_700_000_000_000) -> bytes:
    """A record batch v2 written from the Kafka protocol description (no aiokafka code involved)."""
    body = b""
    for delta, (ts_delta, key, value, headers) in enumerate(records):
        rec = (b"\x00" + _varint(ts_delta) + _varint(delta) + _field(key) + _field(value) + _varint(len(headers))
               + b"".join(_field(k) + _field(v) for k, v in headers))
        body += _varint(len(rec)) + rec
    payload = gzip.compress(body) if gzipped else body
    attributes = 1 if gzipped else 0
    max_ts = base_ts + max(r[0] for r in records)
    after_crc = struct.pack(">hiqqqhii", attributes, len(records) - 1, base_ts, max_ts, -1, -1, -1,
                            len(records)) + payload
    crc = calc_crc32c(after_crc)
    after_length = struct.pack(">ibI", 0, 2, crc) + after_crc
    return struct.pack(">qi", base_offset, len(after_length)) + after_length


RECORDS: list[Rec] = [
    (0, b"k0", b'{"n":0}', [(b"trace", b"abc")]),
    (5, None, b'{"n":1}', [(b"\xff\xfe", b"v"), (b"ok", None), (b"caf\xc3\xa9", b"\x00\xff")]),
    (9, b"k2", None, []),
    (12, b"", b"", [(b"\xc3\x28", b"")]),
]


def expected(base_offset: int) -> list[tuple[Any, ...]]:
    return [(base_offset + i, 1_700_000_000_000 + ts, 0, key, value,
             [(k.decode("utf-8", "surrogateescape"), v) for k, v in headers])
            for i, (ts, key, value, headers) in enumerate(RECORDS)]


def shape(records: Any) -> list[tuple[Any, ...]]:
    return [(r.offset, r.timestamp, r.timestamp_type, r.key, r.value, list(r.headers)) for r in records]


def test_aiokafka_alone_cannot_read_a_header_name_that_is_not_utf8() -> None:
    # Why shared.kafka_records exists; once this fails, aiokafka tolerates such names and the module can go.
    with pytest.raises(UnicodeDecodeError):
        list(DefaultRecordBatch(batch(0, RECORDS)))


@pytest.mark.parametrize("gzipped", [False, True])
def test_the_tolerant_reader_yields_every_record_with_exact_bytes(gzipped: bool) -> None:
    raw = batch(40, RECORDS, gzipped=gzipped)
    assert shape(read_batch(raw)) == expected(40)
    (_, _, _, _, _, headers) = shape(read_batch(raw))[1]
    assert [k.encode("utf-8", "surrogateescape") for k, _ in headers] == [b"\xff\xfe", b"ok", b"caf\xc3\xa9"]


def test_a_valid_batch_reads_as_aiokafka_reads_it() -> None:
    valid = [(ts, k, v, [(n, hv) for n, hv in hs if n in (b"trace", b"ok")]) for ts, k, v, hs in RECORDS]
    raw = batch(7, valid)
    assert shape(read_batch(raw)) == shape(DefaultRecordBatch(raw))


def test_the_fetcher_reads_every_record_across_good_and_bad_batches() -> None:
    good = [(0, b"g", b"good", [(b"h", b"1")])]
    data = batch(0, good) + batch(1, RECORDS) + batch(5, good, gzipped=True) + batch(6, good)[:30]  # cut at the end
    assert fetcher.MemoryRecords is TolerantMemoryRecords
    partition = fetcher.PartitionRecords(TopicPartition("t", 0), fetcher.MemoryRecords(data), None, 0, None, None,
                                         True, fetcher.READ_UNCOMMITTED)
    got = list(partition)
    assert [r.offset for r in got] == [0, 1, 2, 3, 4, 5]
    assert [r.value for r in got] == [b"good", *[r[2] for r in RECORDS], b"good"]
    assert got[2].headers == tuple(expected(1)[1][5])
    assert partition.next_fetch_offset == 6


def test_a_rejected_record_keeps_a_non_utf8_header_name_as_bytes() -> None:
    (record,) = [r for r in read_batch(batch(0, RECORDS[1:2]))]
    rejected = build_rejected(reason="invalid_json", raw=record.value, origin="aggregator", topic="t", partition=0,
                              offset=0, key=record.key, headers=record.headers)
    _, value = encode_rejected(rejected)
    back = RejectedEvent.model_validate(orjson.loads(value))
    assert [(k.encode("utf-8", "surrogateescape"), v) for k, v in back.raw_headers()] == RECORDS[1][3]
    assert back.headers[0].key == "\ufffd\ufffd"
    assert back.headers[1].key_base64 is None
    assert not back.headers_truncated
    assert not back.replayable  # aiokafka sends UTF-8 header names only
