"""Property-based run over the data portal's operations in the publisher's OpenAPI document (no 5xx)."""

from __future__ import annotations

import asyncio

import asyncpg
import schemathesis
from hypothesis import HealthCheck, given, settings

from kp.local import ServiceProcess
from services.publisher.portal import service
from tests.factories import OFFENBACH


async def _key(database_url: str) -> str:
    conn = await asyncpg.connect(database_url)
    try:
        return await service.issue_key(conn, "fuzz", [OFFENBACH])
    finally:
        await conn.close()


class TestOpenApiContract:
    def test_no_generated_request_gets_a_server_error(self, publisher: ServiceProcess, database_url: str) -> None:
        key = asyncio.run(_key(database_url))
        schema = schemathesis.openapi.from_url(f"{publisher.url}/openapi.json").include(
            path_regex=r"^/(v1/portal|portal|api/3)"
        )
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 9
        seen: list[int] = []
        for operation in operations:

            @given(case=operation.as_strategy())
            @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            def check(case: schemathesis.Case) -> None:
                response = case.call(headers={"Authorization": f"Bearer {key}"}, timeout=60)
                seen.append(response.status_code)
                assert response.status_code < 500, (
                    f"{case.method} {case.formatted_path} {case.query} {case.body!r}: {response.text[:300]}")

            check()
        assert 200 in seen
        assert any(400 <= s < 500 for s in seen)
