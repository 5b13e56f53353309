"""Demo traffic passes ingest's checks: no event of a simulated session lies in the future."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from kp.simulator import Simulator
from services.ingest import service
from services.ingest.service import ANONYMOUS, Item, Policy


class TestSimulatedTraffic:
    def test_every_simulated_event_is_accepted_by_the_ingest_checks(self) -> None:
        now = datetime.now(UTC)
        events = list(itertools.islice(Simulator(seed=7, now=now).events(), 2000))
        policy = Policy(clock_skew=timedelta(seconds=0), late_horizon=timedelta(days=1))
        outcomes = [service.check_item(Item(i, e, e), ANONYMOUS, policy, now) for i, e in enumerate(events)]
        assert [o for o in outcomes if isinstance(o, service.Rejected)] == []
