"""The contracts' string rule and membership: refused with a named error type, or accepted and round-tripped."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from shared.events import application_event_adapter, usage_event_adapter, workflow_event_adapter
from shared.events.text import refused_character
from shared.reference import configure_members, service_by_key
from shared.settings import KPSettings
from tests.factories import OFFENBACH, application_submitted, usage_event

# Where arbitrary text may go in a usage event, and the error types the contract may answer with.
TEXT_FIELDS: dict[str, tuple[str, str]] = {
    "page": ("usage.page.viewed", "page"),
    "step_name": ("usage.step.completed", "step_name"),
    "comment": ("usage.feedback.given", "comment"),
}
DATA = {"usage.page.viewed": {"device": "desktop", "referrer": "search"},
        "usage.step.completed": {"step": 1}, "usage.feedback.given": {"stars": 3}}
TEXT_ERRORS = {"string_forbidden_character", "string_too_many_bytes", "string_too_long", "string_too_short",
               "string_pattern_mismatch"}


def _with_text(field: str, text: str) -> dict[str, Any]:
    kind, key = TEXT_FIELDS[field]
    return usage_event(kind, data={**DATA[kind], key: text})


def _types(exc: ValidationError) -> set[str]:
    return {e["type"] for e in exc.errors()}


class TestStringRule:
    @pytest.mark.parametrize("field", sorted(TEXT_FIELDS))
    @settings(max_examples=150, deadline=None)
    @given(text=st.text(alphabet=st.characters(codec=None), max_size=700))
    def test_arbitrary_text_is_accepted_and_round_trips_or_refused_by_name(self, field: str, text: str) -> None:
        event = _with_text(field, text)
        try:
            parsed = usage_event_adapter.validate_python(event)
        except ValidationError as exc:
            refused = _types(exc)
        else:
            refused = set()
        if refused:
            assert refused <= TEXT_ERRORS
            return
        key = TEXT_FIELDS[field][1]
        assert refused_character(text, multiline=field == "comment") is None
        assert len(text.encode()) <= {"page": 400, "step_name": 240, "comment": 1000}[field]
        again = usage_event_adapter.validate_json(usage_event_adapter.dump_json(parsed))
        assert getattr(again.data, key) == text

    @pytest.mark.parametrize("char", ["\x00", "\x01", "\x1b", "\x7f", "\x85", "\x9f", "\ufffe", "\uffff"])
    @pytest.mark.parametrize("field", sorted(TEXT_FIELDS))
    def test_control_characters_are_refused_naming_the_field(self, field: str, char: str) -> None:
        with pytest.raises(ValidationError) as exc:
            usage_event_adapter.validate_python(_with_text(field, f"/antrag{char}x"))
        (error,) = exc.value.errors()
        assert error["type"] == "string_forbidden_character"
        assert error["loc"][-1] == TEXT_FIELDS[field][1]
        assert f"U+{ord(char):04X}" in error["msg"]

    def test_nul_in_page_is_refused_from_json_too(self) -> None:
        body = orjson.dumps(_with_text("page", "/antrag\u0000x"))
        with pytest.raises(ValidationError) as exc:
            usage_event_adapter.validate_json(body)
        assert _types(exc.value) == {"string_forbidden_character"}

    def test_unpaired_surrogate_is_refused(self) -> None:
        with pytest.raises(ValidationError):
            usage_event_adapter.validate_python(_with_text("step_name", "Start\ud800"))
        with pytest.raises(ValidationError):
            usage_event_adapter.validate_json(
                orjson.dumps(_with_text("step_name", "Start")).replace(b"Start", b"Start\\ud800"))

    def test_comment_keeps_line_breaks_and_tabs(self) -> None:
        parsed = usage_event_adapter.validate_python(_with_text("comment", "Gut.\r\n\tDanke"))
        assert parsed.data.comment == "Gut.\r\n\tDanke"  # type: ignore[union-attr]

    def test_one_line_fields_refuse_line_breaks(self) -> None:
        with pytest.raises(ValidationError) as exc:
            usage_event_adapter.validate_python(_with_text("step_name", "Schritt\n2"))
        assert _types(exc.value) == {"string_forbidden_character"}

    def test_bytes_are_bounded_besides_characters(self) -> None:
        emoji = "\U0001F600" * 100  # 100 characters, 400 bytes: within 120 characters, over 240 bytes
        with pytest.raises(ValidationError) as exc:
            usage_event_adapter.validate_python(_with_text("step_name", emoji))
        assert _types(exc.value) == {"string_too_many_bytes"}
        assert usage_event_adapter.validate_python(_with_text("step_name", "\U0001F600" * 60))

    def test_workflow_error_text_follows_the_rule(self) -> None:
        event = {"id": str(uuid.uuid4()), "type": "workflow.step.failed", "source": "kp-workflow",
                 "time": "2026-11-25T10:00:00+01:00", "municipality": OFFENBACH, "service": "99115005104000",
                 "case_id": str(uuid.uuid4()), "application_id": "APP-1234", "definition": "allgemein",
                 "definition_version": 1, "data": {"step": "pruefen", "attempt": 1, "error": "Zeitüberschreitung\n"}}
        assert workflow_event_adapter.validate_python(event)
        event["data"] = {**event["data"], "error": "kaputt\x00"}  # type: ignore[dict-item]
        with pytest.raises(ValidationError) as exc:
            workflow_event_adapter.validate_python(event)
        assert _types(exc.value) == {"string_forbidden_character"}

    def test_a_huge_id_is_refused_without_echoing_it(self) -> None:
        event = usage_event()
        event["id"] = "x" * 480_000
        with pytest.raises(ValidationError) as exc:
            usage_event_adapter.validate_json(orjson.dumps(event))
        assert len(str(exc.value.errors(include_input=False))) < 2000


@pytest.fixture
def extra_member() -> Iterator[str]:
    configure_members(["06411000"], ["99999999999998"])
    yield "06411000"
    configure_members()


class TestMembership:
    @pytest.mark.parametrize("ags", ["99999999", "00000000", "06411000"])
    def test_unknown_municipality_is_refused_in_every_contract(self, ags: str) -> None:
        for adapter, event in ((usage_event_adapter, usage_event(municipality=ags)),
                               (application_event_adapter, application_submitted(municipality=ags))):
            with pytest.raises(ValidationError) as exc:
                adapter.validate_python(event)  # type: ignore[attr-defined]
            assert _types(exc.value) == {"unknown_municipality"}
            with pytest.raises(ValidationError):
                adapter.validate_json(orjson.dumps(event))  # type: ignore[attr-defined]

    def test_configured_extra_member_is_accepted(self, extra_member: str) -> None:
        assert usage_event_adapter.validate_python(usage_event(municipality=extra_member)).municipality == extra_member
        assert application_event_adapter.validate_json(orjson.dumps(application_submitted(municipality=extra_member)))

    def test_settings_configure_the_extra_members(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("KP_EXTRA_MUNICIPALITIES", "06411000, 06412000")
        settings_ = KPSettings()
        assert settings_.extra_municipalities == ("06411000", "06412000")
        try:
            settings_.configure_reference()
            assert usage_event_adapter.validate_python(usage_event(municipality="06412000"))
        finally:
            configure_members()
        with pytest.raises(ValidationError):
            usage_event_adapter.validate_python(usage_event(municipality="06412000"))

    def test_extra_members_must_be_ags(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("KP_EXTRA_MUNICIPALITIES", "0641100x")
        with pytest.raises(ValidationError, match="8-digit AGS"):
            KPSettings()
        monkeypatch.setenv("KP_EXTRA_MUNICIPALITIES", "")
        monkeypatch.setenv("KP_EXTRA_SERVICES", "991150051040")
        with pytest.raises(ValidationError, match="14-digit LeiKa key"):
            KPSettings()

    @pytest.mark.parametrize("key", ["00000000000000", "99999999999999"])
    def test_unknown_service_is_refused_in_every_contract(self, key: str) -> None:
        # Policy (docs/adr/0020-reference-data-policy.md): the reference table, extended only by configuration.
        assert key not in service_by_key()
        for adapter, event in ((usage_event_adapter, usage_event(service=key)),
                               (application_event_adapter, application_submitted(service=key))):
            with pytest.raises(ValidationError) as exc:
                adapter.validate_json(orjson.dumps(event))  # type: ignore[attr-defined]
            assert _types(exc.value) == {"unknown_service"}

    def test_configured_extra_service_is_accepted(self, extra_member: str) -> None:
        assert usage_event_adapter.validate_python(usage_event(service="99999999999998"))


class TestAggregatorFastPath:
    def test_the_aggregators_adapter_applies_the_same_rules(self) -> None:
        from datetime import UTC, datetime, timedelta

        from services.aggregator.fold import Record, prepare, usage_contributions

        now = datetime.now(UTC)
        good = usage_event(time=now)
        bad = [
            _with_text("page", "/antrag\u0000x"),
            usage_event(municipality="99999999"),
            usage_event(service="00000000000000"),
            _with_text("step_name", "\U0001F600" * 100),
        ]
        records = [Record("usage.events.v1", 0, i, orjson.dumps(e)) for i, e in enumerate([good, *bad])]
        prepared = prepare(records, usage_event_adapter, usage_contributions, False, now, timedelta(days=7),
                           timedelta(minutes=5), b"unit-test-ckm-secret")
        assert [c.id for c in prepared.relevant] == [uuid.UUID(good["id"])]
        assert [r.record.offset for r in prepared.rejections] == [1, 2, 3, 4]
        assert [{e["type"] for e in r.errors} for r in prepared.rejections] == [
            {"string_forbidden_character"}, {"unknown_municipality"}, {"unknown_service"}, {"string_too_many_bytes"}]
