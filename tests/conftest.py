"""Test fixtures: one real Kafka broker and one real PostgreSQL per test session.

Uses KP_KAFKA_BOOTSTRAP / KP_DATABASE_URL when both are set; otherwise starts its own under `.run/`
(free ports, torn down at the end). Unit tests never touch these fixtures.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from kp.local import LocalStack

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def stack() -> Iterator[LocalStack]:
    """Real Kafka + PostgreSQL, migrated, topics created."""
    run_dir = ROOT / ".run" / f"test-{os.getpid()}"
    s = LocalStack.from_env(run_dir)
    s.start_infra()
    try:
        yield s
    finally:
        s.purge()


@pytest.fixture(scope="session")
def kafka_bootstrap(stack: LocalStack) -> str:
    assert stack.kafka_bootstrap
    return stack.kafka_bootstrap


@pytest.fixture(scope="session")
def database_url(stack: LocalStack) -> str:
    assert stack.database_url
    return stack.database_url


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
def unique() -> str:
    """A random suffix so tests never see each other's data."""
    return uuid.uuid4().hex[:12]


def pytest_collection_modifyitems(items: list[Any]) -> None:
    for item in items:
        path = str(item.fspath)
        if f"{os.sep}integration{os.sep}" in path:
            item.add_marker(pytest.mark.integration)
        if f"{os.sep}e2e{os.sep}" in path:
            item.add_marker(pytest.mark.e2e)
