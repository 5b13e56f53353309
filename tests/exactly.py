"""The exactly-once checks of the fault suites (`tests/faults`, `tests/cluster`): wait until the load got
some events accepted, and once everything is drained, prove every accepted event is counted exactly once."""

from __future__ import annotations

from typing import Protocol

from bench.load import Load, LoadResult
from bench.probes import aggregator_lag, counted
from tests.waiting import eventually


class Stack(Protocol):
    @property
    def bootstrap(self) -> str: ...
    @property
    def database_url(self) -> str: ...


async def wait_accepted(load: Load, at_least: int, timeout: float) -> None:
    async def accepted() -> int:
        return len(load.result.accepted_ids)

    await eventually(accepted, lambda n: n >= at_least, timeout=timeout)


async def assert_exact(stack: Stack, ags: str, result: LoadResult, *, count_timeout: float,
                       lag_timeout: float) -> None:
    """Every event sent was accepted (after retries), and the KPIs count each accepted event exactly once."""
    assert result.gave_up_batches == 0, result.summary()
    assert result.rejected == 0, result.rejected_reasons
    assert len(result.accepted_ids) == result.sent_events
    accepted = len(result.accepted_ids)

    async def now_counted() -> int:
        return await counted(stack.database_url, ags)

    await eventually(now_counted, lambda n: n >= accepted, timeout=count_timeout, interval=0.25)

    async def lag() -> int:
        return await aggregator_lag(stack.bootstrap, stack.database_url)

    await eventually(lag, lambda n: n == 0, timeout=lag_timeout, interval=0.25)
    # Drained: nothing more can arrive, so the count must be exact, not just large enough.
    assert await now_counted() == accepted
