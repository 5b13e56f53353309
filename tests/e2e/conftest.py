"""The whole system as processes against the session's Kafka and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kp.local import SERVICES, LocalStack, ServiceProcess


@pytest.fixture(scope="session")
def system(stack: LocalStack) -> Iterator[dict[str, ServiceProcess]]:
    procs = {name: stack.service(name) for name in SERVICES}
    for p in procs.values():
        p.start()
    try:
        for p in procs.values():
            p.wait_ready()
        yield procs
    finally:
        for p in procs.values():
            p.stop()
