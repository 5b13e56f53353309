"""The whole system as processes against the session's Kafka and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from kp.local import SERVICES, LocalStack, ServiceProcess

TEST_MUNICIPALITIES = ["99" + f"{uuid.uuid4().int % 10**6:06d}" for _ in range(8)]
"""AGS no other test run uses, accepted by the system as extra members: counts are exact for one test alone."""


@pytest.fixture(scope="session")
def system(stack: LocalStack) -> Iterator[dict[str, ServiceProcess]]:
    extra = {"KP_EXTRA_MUNICIPALITIES": ",".join(TEST_MUNICIPALITIES)}
    procs = {name: stack.service(name, extra) for name in SERVICES}
    for p in procs.values():
        p.start()
    try:
        for p in procs.values():
            p.wait_ready()
        yield procs
    finally:
        for p in procs.values():
            p.stop()
