"""Contracts v1: valid events parse into their class, everything else is refused with a precise path."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared.events import application_event_adapter, usage_event_adapter
from shared.events.usage import USAGE_EVENT_TYPES, FeedbackGiven, SessionStarted
from tests.factories import application_submitted, usage_event


def _locs(exc: ValidationError) -> set[tuple[str, ...]]:
    return {tuple(str(p) for p in e["loc"]) for e in exc.errors()}


class TestUsageEventParsing:
    @pytest.mark.parametrize("kind", USAGE_EVENT_TYPES)
    def test_every_type_parses_into_its_class(self, kind: str) -> None:
        event = usage_event(kind)
        parsed = usage_event_adapter.validate_python(event)
        assert parsed.type == kind
        assert str(parsed.id) == event["id"]

    def test_discriminator_picks_class(self) -> None:
        assert isinstance(usage_event_adapter.validate_python(usage_event("usage.session.started")), SessionStarted)
        assert isinstance(usage_event_adapter.validate_python(usage_event("usage.feedback.given")), FeedbackGiven)

    def test_kafka_key_is_municipality_and_service(self) -> None:
        parsed = usage_event_adapter.validate_python(usage_event(municipality="06534014", service="99050012104000"))
        assert parsed.kafka_key == b"06534014:99050012104000"

    def test_unknown_field_rejected(self) -> None:
        event = usage_event()
        event["ip"] = "10.0.0.1"
        with pytest.raises(ValidationError) as exc:
            usage_event_adapter.validate_python(event)
        assert ("usage.session.started", "ip") in _locs(exc.value)

    def test_unknown_field_in_data_rejected(self) -> None:
        event = usage_event("usage.feedback.given", data={"stars": 3, "name": "Erika"})
        with pytest.raises(ValidationError) as exc:
            usage_event_adapter.validate_python(event)
        assert ("usage.feedback.given", "data", "name") in _locs(exc.value)

    @pytest.mark.parametrize(
        ("field", "value"),
        [("municipality", "6413000"), ("municipality", 6413000), ("service", "9911500510400"),
         ("time", "2026-11-25T10:00:00"), ("id", "not-a-uuid"), ("session", "x"), ("source", "Has Space")],
    )
    def test_envelope_fields_are_strict(self, field: str, value: object) -> None:
        event = usage_event()
        event[field] = value
        with pytest.raises(ValidationError) as exc:
            usage_event_adapter.validate_python(event)
        assert ("usage.session.started", field) in _locs(exc.value)

    def test_numbers_are_not_coerced_from_strings(self) -> None:
        with pytest.raises(ValidationError):
            usage_event_adapter.validate_python(
                usage_event("usage.step.completed", data={"step": "2", "step_name": "x"})
            )

    def test_unknown_type_rejected(self) -> None:
        event = usage_event()
        event["type"] = "usage.session.teleported"
        with pytest.raises(ValidationError) as exc:
            usage_event_adapter.validate_python(event)
        assert exc.value.errors()[0]["type"] == "union_tag_invalid"

    def test_feedback_comment_is_bounded(self) -> None:
        with pytest.raises(ValidationError):
            usage_event_adapter.validate_python(
                usage_event("usage.feedback.given", data={"stars": 5, "comment": "x" * 501})
            )

    @pytest.mark.parametrize("stars", [0, 6])
    def test_stars_range(self, stars: int) -> None:
        with pytest.raises(ValidationError):
            usage_event_adapter.validate_python(usage_event("usage.feedback.given", data={"stars": stars}))


class TestApplicationEventParsing:
    def test_submitted_parses(self) -> None:
        parsed = application_event_adapter.validate_python(application_submitted("APP-1234", documents=["ausweis"]))
        assert parsed.type == "application.submitted"
        assert parsed.application_id == "APP-1234"

    def test_documents_list_is_bounded(self) -> None:
        with pytest.raises(ValidationError):
            application_event_adapter.validate_python(application_submitted(documents=["doc"] * 51))
