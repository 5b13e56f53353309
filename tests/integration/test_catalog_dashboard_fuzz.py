"""Property-based run over the catalog and dashboard operations of the publisher's OpenAPI document."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from kp.local import LocalStack, ServiceProcess


@pytest.fixture(scope="module")
def publisher(stack: LocalStack) -> Iterator[ServiceProcess]:
    with stack.running("publisher") as proc:
        yield proc


class TestOpenApiContract:
    def test_no_generated_request_gets_a_server_error(self, publisher: ServiceProcess) -> None:
        schema = schemathesis.openapi.from_url(f"{publisher.url}/openapi.json").include(
            path_regex=r"^/(catalog|dashboard)"
        )
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 8  # catalog (3 routes x GET/HEAD) and the two dashboard pages
        seen: list[int] = []
        for operation in operations:

            @given(case=operation.as_strategy())
            @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            def check(case: schemathesis.Case) -> None:
                response = case.call(timeout=60)
                seen.append(response.status_code)
                assert response.status_code < 500, (
                    f"{case.method} {case.formatted_path} {case.query} {case.headers}: {response.text[:300]}")

            check()
        assert 200 in seen
        assert any(400 <= s < 500 for s in seen)  # the generator did try bad parameters
