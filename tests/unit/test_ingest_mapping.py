"""Declarative platform mappings: validated on load, applied field by field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from services.ingest.mapping import MappingError, PlatformMapping, load_mapping, load_mappings
from services.ingest.settings import MAPPINGS_DIR
from shared.events import usage_event_adapter

CIVENTO_STEP: dict[str, Any] = {
    "callbackId": "cb-1", "ereignis": "SCHRITT_ABGESCHLOSSEN", "zeitpunkt": 1795000000000,
    "mandant": {"ags": "06413000"}, "prozess": {"leikaSchluessel": "99115005104000"},
    "prozessInstanzId": "PI-20261124-0001", "schritt": {"nummer": "3", "name": "Nachweise"},
}


def base(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "platform": "demo",
        "envelope": {
            "id": {"path": "id"}, "type": {"const": "usage.session.submitted"}, "source": {"const": "demo"},
            "time": {"path": "t"}, "municipality": {"path": "ags"}, "service": {"path": "leika"},
            "session": {"path": "s"},
        },
        "data": {"usage.session.submitted": {"duration_s": {"path": "d", "convert": "int"}}},
    }
    doc.update(changes)
    return doc


class TestLoad:
    def test_shipped_mappings_are_valid(self) -> None:
        mappings = load_mappings(MAPPINGS_DIR)
        assert {"civento", "formengine"} <= set(mappings)

    def test_minimal_mapping_is_valid(self) -> None:
        assert PlatformMapping.model_validate(base()).produced_types() == ["usage.session.submitted"]

    @pytest.mark.parametrize(("change", "message"), [
        ({"envelope": {"id": {"path": "id"}}}, "envelope fields missing"),
        ({"data": {}}, "no `data` mapping"),
        ({"data": {"usage.session.submitted": {}}}, "unmapped required"),
        ({"data": {"usage.session.submitted": {"duration_s": {"path": "d"}, "nope": {"const": 1}}}}, "unknown fields"),
        ({"data": {"usage.session.submitted": {"duration_s": {"path": "d", "const": 1}}}}, "exactly one"),
        ({"data": {"usage.session.submitted": {"duration_s": {"path": "d"}}, "usage.made.up": {}}},
         "unknown event types"),
        ({"surprise": True}, "Extra inputs"),
    ])
    def test_invalid_mapping_is_refused_with_a_reason(self, change: dict[str, Any], message: str) -> None:
        with pytest.raises(ValueError, match=message):
            PlatformMapping.model_validate(base(**change))

    def test_broken_file_names_the_file(self, tmp_path: Path) -> None:
        path = tmp_path / "broken.yaml"
        path.write_text("platform: x\nenvelope: {}\ndata: {}\n")
        with pytest.raises(ValueError, match=r"broken\.yaml"):
            load_mapping(path)


class TestApply:
    def test_civento_callback_becomes_a_valid_event_with_stable_id(self) -> None:
        mapping = load_mappings(MAPPINGS_DIR)["civento"]
        first = mapping.apply(CIVENTO_STEP)
        event = usage_event_adapter.validate_python(first)
        assert event.type == "usage.step.completed"
        assert event.data.model_dump() == {"step": 3, "step_name": "Nachweise"}
        assert event.time.year == 2026
        assert mapping.apply(dict(CIVENTO_STEP))["id"] == first["id"]
        assert mapping.apply({**CIVENTO_STEP, "callbackId": "cb-2"})["id"] != first["id"]

    def test_value_map_default_applies_to_unknown_values(self) -> None:
        mapping = load_mappings(MAPPINGS_DIR)["civento"]
        started = {**CIVENTO_STEP, "ereignis": "PROZESS_GESTARTET", "client": {"geraet": "SMART-TV"}}
        assert mapping.apply(started)["data"] == {"channel": "web", "device": "other"}

    def test_optional_field_with_null_default_is_left_out(self) -> None:
        mapping = load_mappings(MAPPINGS_DIR)["formengine"]
        payload = {"delivery": {"id": "7b0c3a39-0b0e-4a5e-9d59-4a7f0e8f2c11", "timestamp": "2026-11-24T10:00:00Z"},
                   "trigger": "rating.given", "form": {"tags": {"ags": "06534014", "leika": "99115005104000"}},
                   "submission": {"token": "tok-12345678"}, "rating": {"value": 5}}
        assert mapping.apply(payload)["data"] == {"stars": 5}

    @pytest.mark.parametrize(("payload", "loc"), [
        ({**CIVENTO_STEP, "ereignis": "UNBEKANNT"}, ["type"]),
        ({k: v for k, v in CIVENTO_STEP.items() if k != "mandant"}, ["municipality"]),
        ({**CIVENTO_STEP, "zeitpunkt": "gestern"}, ["time"]),
        ({**CIVENTO_STEP, "schritt": {"nummer": "drei", "name": "x"}}, ["data.step"]),
    ])
    def test_unmappable_payload_raises_with_location(self, payload: dict[str, Any], loc: list[str]) -> None:
        mapping = load_mappings(MAPPINGS_DIR)["civento"]
        with pytest.raises(MappingError) as err:
            mapping.apply(payload)
        assert err.value.loc == loc

    def test_non_object_raises(self) -> None:
        with pytest.raises(MappingError):
            load_mappings(MAPPINGS_DIR)["civento"].apply([1, 2])
