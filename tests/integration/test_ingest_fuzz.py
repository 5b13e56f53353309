"""Schemathesis fuzzes the ingest OpenAPI document against the running service: no input yields a 5xx."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from kp.local import LocalStack, ServiceProcess
from tests.ingest_keys import bearer, ingest_key


@pytest.fixture(scope="module")
def ingest_process(stack: LocalStack) -> Iterator[ServiceProcess]:
    with stack.running("ingest") as proc:
        yield proc


@pytest.fixture(scope="module")
def fuzz_key(stack: LocalStack) -> str:
    assert stack.database_url
    return asyncio.run(ingest_key(stack.database_url, rate_per_s=1e6, burst=1_000_000))


class TestOpenApiFuzzing:
    def test_no_input_causes_a_server_error(self, ingest_process: ServiceProcess, fuzz_key: str) -> None:
        schema = schemathesis.openapi.from_url(f"{ingest_process.url}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert {op.path for op in operations} >= {"/v1/events", "/v1/platforms/{platform}/events"}
        statuses: Counter[int] = Counter()

        for operation in operations:
            @given(case=operation.as_strategy())
            @settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            def call(case: Any) -> None:
                response = case.call(base_url=ingest_process.url, headers=bearer(fuzz_key), timeout=30)
                statuses[response.status_code] += 1
                assert response.status_code < 500, (case.method, case.path, response.status_code, response.text[:300])
                if 400 <= response.status_code < 500:
                    content_type = response.headers.get("content-type", [""])[0]
                    assert content_type.startswith("application/problem+json"), response.text

            call()
        assert statuses[200] > 0  # the fuzzer reached the per-event path, not only request-level refusals
