"""Kafka-backed event sink (the ingest service keeps no SQL of its own yet)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer


class KafkaSink:
    """Produces to one topic and waits for every acknowledgement (acks=all)."""

    def __init__(self, producer: AIOKafkaProducer, topic: str, timeout_s: float) -> None:
        self._producer = producer
        self._topic = topic
        self._timeout_s = timeout_s

    async def write(self, events: Sequence[tuple[bytes, bytes]]) -> None:
        futures = [await self._producer.send(self._topic, value=value, key=key) for key, value in events]
        await asyncio.wait_for(asyncio.gather(*futures), timeout=self._timeout_s)
