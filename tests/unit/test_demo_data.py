"""Demo data of `kp stack up`: deterministic by seed, 13 months deep, different per city, valid by contract."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, timedelta

from kp import demo
from kp.eakte import UNREADABLE
from services.publisher.portal.validation import check_file, parse_dataset
from services.workflow.definitions import HumanStep, load_definitions
from shared.events.application import application_event_adapter
from shared.events.usage import usage_event_adapter
from shared.reference import municipalities

NOW = datetime(2026, 3, 15, 10, 30, tzinfo=UTC)
TODAY = date(2026, 3, 15)


def _started(events: list[dict[str, object]]) -> list[dict[str, object]]:
    return [e for e in events if e["type"] == "usage.session.started"]


class TestHistory:
    def test_the_same_seed_gives_the_same_events_and_another_seed_others(self) -> None:
        first = list(demo.history(3, TODAY, days=20, now=NOW))
        assert first == list(demo.history(3, TODAY, days=20, now=NOW))
        assert first != list(demo.history(4, TODAY, days=20, now=NOW))

    def test_spans_thirteen_months_with_weekly_seasonal_and_city_patterns(self) -> None:
        events = list(demo.history(1, TODAY, now=NOW))
        starts = [datetime.fromisoformat(str(e["time"])) for e in _started(events)]
        assert min(starts).date() <= TODAY - timedelta(days=390)
        assert max(starts) < NOW
        assert all(datetime.fromisoformat(str(e["time"])) <= NOW for e in events)
        by_weekday = Counter(t.weekday() for t in starts)
        assert by_weekday[0] > 2 * by_weekday[6]  # Monday against Sunday
        by_month = Counter(t.month for t in starts if t.year == 2025)
        assert by_month[9] > by_month[8] * 1.2  # September busier than August
        per_city: dict[str, Counter[str]] = defaultdict(Counter)
        for e in events:
            per_city[str(e["municipality"])][str(e["type"])] += 1
        assert set(per_city) == {m.ags for m in municipalities()}
        rates = {ags: c["usage.session.submitted"] / c["usage.session.started"] for ags, c in per_city.items()}
        assert max(rates.values()) - min(rates.values()) > 0.05  # the cities really differ

    def test_every_event_passes_the_usage_contract(self) -> None:
        for body in demo.history(2, TODAY, days=10, now=NOW):
            usage_event_adapter.validate_json(json.dumps(body))


class TestApplications:
    def test_cases_take_every_path_and_pass_the_contract(self) -> None:
        events = demo.applications(1, NOW)
        assert events == demo.applications(1, NOW)
        for body in events:
            application_event_adapter.validate_python(body)
        types = Counter(str(e["type"]) for e in events)
        assert set(types) == {"application.submitted", "application.documents.added",
                              "application.payment.received", "application.withdrawn", "application.decided"}
        services = {str(e["service"]) for e in events}
        assert services == {d.service for d in load_definitions().all() if d.service}
        by_app: dict[str, list[str]] = defaultdict(list)
        for e in events:
            by_app[str(e["application_id"])].append(str(e["type"]))
        assert all(kinds[0] == "application.submitted" for kinds in by_app.values())
        assert any(kinds == ["application.submitted"] for kinds in by_app.values())  # left waiting
        assert any("application.documents.added" in kinds and kinds[-1] == "application.decided"
                   for kinds in by_app.values())  # Nachforderung, then decided
        by_service = {d.service: d for d in load_definitions().all()}
        for e in events:
            if e["type"] == "application.decided":  # a decision the definition's clerk step can take
                steps = by_service[str(e["service"])].steps
                assert any(isinstance(st, HumanStep) and e["data"]["outcome"] in st.decisions  # type: ignore[index]
                           for st in steps)
        assert sum(UNREADABLE in e["data"].get("documents", []) for e in events) >= 6  # type: ignore[attr-defined]


class TestDatasets:
    def test_each_city_gets_valid_demo_datasets_with_a_hosted_csv(self) -> None:
        items = demo.datasets(1, TODAY)
        assert Counter(d["municipality"] for d, _ in items) == {m.ags: len(demo.DATASETS) for m in municipalities()}
        for description, content in items:
            parsed = parse_dataset(json.dumps(description).encode())
            assert "Demodaten" in parsed.keywords
            assert "(Demodaten)" in parsed.title
            checked = check_file(f"{description['name']}.csv", content.encode(), 1_000_000)
            assert checked.report is not None
            assert checked.report["valid"], checked.report
