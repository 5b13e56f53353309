"""The upcaster registry: v1 page views become v2, current events pass unchanged, unknown versions are refused."""

from __future__ import annotations

from typing import Any, Literal

import orjson
import pytest
from pydantic import ValidationError

from shared.events import upcast, usage_event_adapter
from shared.events.usage import PageViewed, PageViewedV1, SessionStarted
from tests.factories import usage_event

V1_REFERRERS = ("search", "portal", "direct", "other")
V2_REFERRERS = ("search", "social", "internal", "municipal", "portal", "direct", "other")


def page_view(referrer: str, schema_version: int | Literal["omit"]) -> dict[str, Any]:
    return usage_event("usage.page.viewed", schema_version=schema_version,
                       data={"page": "/start", "device": "mobile", "referrer": referrer})


class TestUpcast:
    @pytest.mark.parametrize("referrer", V1_REFERRERS)
    @pytest.mark.parametrize("version", [1, "omit"])
    def test_a_v1_page_view_becomes_v2_with_the_same_class(self, referrer: str, version: int | Literal["omit"]) -> None:
        raw = page_view(referrer, version)
        PageViewedV1.model_validate(raw)  # a valid event of the published version 1
        up = upcast.upcast(raw)
        assert up == {**raw, "schema_version": 2}
        event = PageViewed.model_validate(up)
        assert event.schema_version == 2
        assert event.data.referrer == referrer

    @pytest.mark.parametrize("referrer", V2_REFERRERS)
    def test_a_v2_page_view_passes_unchanged(self, referrer: str) -> None:
        raw = page_view(referrer, 2)
        assert upcast.upcast(raw) is raw
        assert not upcast.needs_upcast(raw)

    def test_single_version_types_pass_unchanged(self) -> None:
        raw = usage_event("usage.session.started")
        assert upcast.upcast(raw) is raw
        assert not upcast.needs_upcast(raw)

    @pytest.mark.parametrize("version", [0, 3, 99, "1", 1.0, True, None])
    def test_an_unknown_version_is_refused_with_a_clear_error(self, version: object) -> None:
        raw = {**page_view("search", 1), "schema_version": version}
        with pytest.raises(ValidationError) as info:
            upcast.upcast(raw)
        [error] = info.value.errors(include_url=False)
        assert error["type"] == "unknown_schema_version"
        assert error["loc"] == ("schema_version",)
        assert error["msg"] == f"usage.page.viewed has no schema version {version!r}; known versions are 1 to 2"

    def test_every_registered_upcaster_leads_to_the_current_version(self) -> None:
        for (kind, version) in upcast.UPCASTERS:
            assert version < upcast.CURRENT_VERSIONS[kind]
            for step in range(upcast.DEFAULT_VERSION, upcast.CURRENT_VERSIONS[kind]):
                assert (kind, step) in upcast.UPCASTERS


class TestValidate:
    def test_v1_and_v2_page_views_validate_to_the_current_model(self) -> None:
        for raw in (page_view("portal", 1), page_view("social", 2)):
            event = upcast.validate_python(usage_event_adapter, raw)
            assert isinstance(event, PageViewed)
            assert event.schema_version == 2

    def test_a_v1_page_view_fails_the_current_model_alone(self) -> None:
        with pytest.raises(ValidationError):
            usage_event_adapter.validate_python(page_view("search", 1))

    @pytest.mark.parametrize("referrer", ["social", "internal", "municipal", "blog"])
    def test_a_v1_page_view_with_a_class_v1_does_not_have_is_refused(self, referrer: str) -> None:
        with pytest.raises(ValidationError) as info:
            upcast.validate_python(usage_event_adapter, page_view(referrer, 1))
        [error] = info.value.errors(include_url=False)
        assert (error["type"], error["loc"]) == ("v1_referrer", ("data", "referrer"))
        assert error["msg"] == ("schema version 1 has the referrer classes search, portal, direct, other; "
                                "send version 2 for the others")

    def test_revalidate_json_upcasts_an_old_version_and_keeps_other_errors(self) -> None:
        old = orjson.dumps(page_view("direct", 1))
        with pytest.raises(ValidationError) as first:
            usage_event_adapter.validate_json(old)
        event = upcast.revalidate_json(usage_event_adapter, old, first.value)
        assert isinstance(event, PageViewed)
        assert event.data.referrer == "direct"

        broken = orjson.dumps(usage_event("usage.session.started", data={"channel": "fax", "device": "mobile"}))
        with pytest.raises(ValidationError) as second:
            usage_event_adapter.validate_json(broken)
        with pytest.raises(ValidationError) as again:
            upcast.revalidate_json(usage_event_adapter, broken, second.value)
        assert again.value is second.value

    def test_the_dump_of_a_v2_page_view_carries_its_version(self) -> None:
        event = upcast.validate_python(usage_event_adapter, page_view("portal", "omit"))
        assert orjson.loads(usage_event_adapter.dump_json(event))["schema_version"] == 2
        assert isinstance(usage_event_adapter.validate_python(usage_event("usage.session.started")), SessionStarted)
