"""Ingest's I/O other than the database: the Kafka sink for the accepted and the rejected topics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError
from aiokafka.partitioner import DefaultPartitioner

log = logging.getLogger(__name__)


class KafkaSink:
    """Produces to the events and rejected topics and waits for every acknowledgement (acks=all).

    A producer that failed a write is replaced by a fresh one (new producer id): after an outage, batches
    that expired unsent leave a gap in the idempotent producer's sequence numbers, and the broker would refuse
    every later batch of that partition with OutOfOrderSequenceNumber. The failed writes were answered 503
    and get retried by the platforms, so nothing unacknowledged is lost by dropping the old producer.
    """

    def __init__(self, factory: Callable[[], AIOKafkaProducer], topic: str, rejected_topic: str, timeout_s: float,
                 observe: Callable[[float, bool], None] | None = None) -> None:
        self._factory = factory
        self._topic = topic
        self._rejected_topic = rejected_topic
        self._timeout_s = timeout_s
        self._observe = observe
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()
        self._closing: set[asyncio.Task[None]] = set()
        self._partitioner = DefaultPartitioner()
        self._partitions: dict[tuple[bytes, int], int] = {}
        self._failed_at = -1e9
        self.replacements = 0

    async def start(self) -> None:
        await self._current()

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()  # flushes pending sends before closing
        for task in list(self._closing):
            await task

    async def ready(self) -> None:
        producer = await self._current()
        await producer.client.fetch_all_metadata()

    async def _current(self) -> AIOKafkaProducer:
        producer = self._producer
        if producer is not None:
            return producer
        async with self._lock:
            if self._producer is None:
                if time.monotonic() - self._failed_at < 1.0:
                    # Requests queued behind a failed start fail fast instead of each waiting for a timeout.
                    raise KafkaConnectionError("Kafka unreachable (producer start failed just now)")
                fresh = self._factory()
                try:
                    await asyncio.wait_for(fresh.start(), timeout=self._timeout_s)
                except BaseException:
                    self._failed_at = time.monotonic()
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(fresh.stop(), timeout=self._timeout_s)
                    raise
                self._producer = fresh
            return self._producer

    def _discard(self, producer: AIOKafkaProducer) -> None:
        if self._producer is producer:
            self._producer = None
            self.replacements += 1
            task = asyncio.create_task(self._close(producer))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def _close(self, producer: AIOKafkaProducer) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(producer.stop(), timeout=30)
        log.info("replaced the Kafka producer after a failed write")

    async def write(self, events: Sequence[tuple[bytes, bytes]], rejected: Sequence[tuple[bytes, bytes]]) -> None:
        started = time.perf_counter()
        ok = False
        try:
            producer = await self._current()
            try:
                await asyncio.wait_for(self._send_all(producer, events, rejected), timeout=self._timeout_s)
            except MessageSizeTooLargeError:
                raise  # a data error: the producer is fine, and replacing it would not help the record
            except Exception:
                self._discard(producer)
                raise
            ok = True
        finally:
            if self._observe is not None:
                self._observe(time.perf_counter() - started, ok)

    async def _send_all(self, producer: AIOKafkaProducer, events: Sequence[tuple[bytes, bytes]],
                        rejected: Sequence[tuple[bytes, bytes]]) -> None:
        futures: list[asyncio.Future[Any]] = []
        for topic, records in ((self._topic, events), (self._rejected_topic, rejected)):
            if not records:
                continue
            partitions = sorted(await producer.partitions_for(topic))
            for key, value in records:
                partition = self._partition(key, partitions)
                futures.append(await producer.send(topic, value=value, key=key, partition=partition))
        await asyncio.gather(*futures)

    def _partition(self, key: bytes, partitions: list[int]) -> int:
        """Kafka's default partition for a key (murmur2, as every client computes it), remembered per key:
        there are only municipality x service keys, and hashing in pure Python costs more than the send."""
        cache_key = (key, len(partitions))
        partition = self._partitions.get(cache_key)
        if partition is None:
            if len(self._partitions) > 100_000:
                self._partitions.clear()
            partition = self._partitions[cache_key] = self._partitioner(key, partitions, partitions)
        return partition
