"""Property-based run over the publisher's OpenAPI document: no request may produce a server error."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from kp.local import LocalStack, ServiceProcess
from shared.reference import municipalities


@pytest.fixture(scope="module")
def publisher(stack: LocalStack) -> Iterator[ServiceProcess]:
    with stack.running("publisher") as proc:
        yield proc


@pytest.fixture(scope="module")
async def seeded(database_url: str) -> None:
    """A few days of KPIs for the member cities under a service key only this module uses."""
    conn = await asyncpg.connect(database_url)
    try:
        start = datetime(2026, 1, 1, 23, tzinfo=UTC)
        rows = [("day", start + timedelta(days=d), m.ags, "99999999999901", metric, dim, (d * 7 + i) % 13)
                for d in range(10) for i, m in enumerate(municipalities())
                for metric, dim in (("sessions_started", ""), ("sessions_submitted", ""), ("feedback", "4"),
                                    ("duration_le", "300"), ("payment", "paypal"))]
        await conn.executemany(
            """INSERT INTO kpi_values (granularity, period_start, municipality, service, metric, dimension, value)
               VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING""", [r for r in rows if r[-1]])
    finally:
        await conn.close()


class TestOpenApiContract:
    def test_no_generated_request_gets_a_server_error(self, publisher: ServiceProcess, seeded: None) -> None:
        schema = schemathesis.openapi.from_url(f"{publisher.url}/openapi.json").include(
            path_regex=r"^/v1/(kpis|comparison|municipalities|services|kpi-definitions)"
        )
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 10
        seen: list[int] = []
        for operation in operations:

            @given(case=operation.as_strategy())
            @settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            def check(case: schemathesis.Case) -> None:
                response = case.call(timeout=30)
                seen.append(response.status_code)
                assert response.status_code < 500, (
                    f"{case.method} {case.formatted_path} {case.query}: {response.text[:300]}")
                if 400 <= response.status_code < 500:
                    content_type = response.headers.get("content-type", [""])  # schemathesis: lists of values
                    assert content_type[0].startswith("application/problem+json")

            check()
        assert any(s == 200 for s in seen)
        assert any(s in (400, 422) for s in seen)  # the generator did try bad parameters
