"""Ingest API keys for tests: a fresh key per call, scoped to the given municipalities."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer
from asgi_lifespan import LifespanManager

from kp.apikeys import create_key
from services.ingest.app import create_app
from services.ingest.settings import IngestSettings
from tests.factories import MARBURG, OFFENBACH
from tests.waiting import eventually


async def ingest_key(database_url: str, *municipalities: str, platform: str = "test-platform",
                     rate_per_s: float = 1000.0, burst: int = 1000) -> str:
    """Create a key and return the plain value for `Authorization: Bearer <key>`."""
    plain, _ = await create_key(database_url, platform, list(municipalities or (OFFENBACH, MARBURG)), rate_per_s,
                                burst, "test")
    return plain


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@asynccontextmanager
async def running_ingest(kafka_bootstrap: str, database_url: str, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The ingest app in this process (real Kafka and PostgreSQL), with an HTTP client bound to it."""
    settings = IngestSettings(kafka_bootstrap=kafka_bootstrap, database_url=database_url, **overrides)
    app = create_app(settings)
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=60) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest", timeout=60) as client:
            yield client


async def read_topic(kafka_bootstrap: str, topic: str, match: Callable[[dict[str, Any]], bool], count: int,
                     timeout: float = 30.0) -> list[dict[str, Any]]:
    """Read `topic` from the start until `count` JSON records satisfy `match`; return those records."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest",
                                group_id=f"test-{uuid.uuid4().hex}", enable_auto_commit=False)
    await consumer.start()
    found: list[dict[str, Any]] = []
    try:
        async def poll() -> list[dict[str, Any]]:
            batch = await consumer.getmany(timeout_ms=300)
            for records in batch.values():
                for r in records:
                    try:
                        value = orjson.loads(r.value)
                    except orjson.JSONDecodeError:
                        continue
                    if isinstance(value, dict) and match(value):
                        found.append(value)
            return found

        await eventually(poll, lambda f: len(f) >= count, timeout=timeout)
    finally:
        await consumer.stop()
    return found
