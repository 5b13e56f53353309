"""Workflow definitions: the shipped set loads; invalid ones are refused with the file and field named."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.workflow.definitions import (
    DEFINITIONS_DIR,
    DefinitionError,
    Registry,
    load_definitions,
    parse_definition,
)
from services.workflow.service import add_months
from shared.reference import services

SHIPPED = {
    "99115005104000": "wohnsitz-anmeldung",
    "99050012104000": "gewerbe-anmeldung",
    "99108001001000": "bewohnerparkausweis",
    "99102013104000": "hundesteuer-anmeldung",
    "99012070006001": "baugenehmigung-vereinfacht",
}


def wohnsitz() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEFINITIONS_DIR / "wohnsitz-anmeldung.v1.yaml").read_text())
    return data


class TestShippedDefinitions:
    def test_every_required_service_has_a_definition_with_a_reference_key(self) -> None:
        registry = load_definitions()
        keys = {s.leika_key for s in services()}
        for key, name in SHIPPED.items():
            definition = registry.for_service(key)
            assert definition is not None
            assert definition.name == name
            assert key in keys

    def test_unknown_service_falls_back_to_the_generic_definition(self) -> None:
        fallback = load_definitions().for_service("99001009004002")
        assert fallback is not None
        assert fallback.name == "allgemein"

    def test_baugenehmigung_watches_the_genehmigungsfiktion(self) -> None:
        bau = load_definitions().for_service("99012070006001")
        assert bau is not None
        assert bau.fiction is not None
        assert bau.fiction.months == 3
        assert bau.statutory.consequence == "genehmigungsfiktion"


class TestInvalidDefinitions:
    def test_transition_to_unknown_step_is_named(self) -> None:
        data = wohnsitz()
        data["steps"][0]["next"] = "nirgendwo"
        with pytest.raises(DefinitionError) as exc:
            parse_definition(data, "x.yaml")
        assert "x.yaml" in str(exc.value)
        assert "'eingang' leads to undefined step 'nirgendwo'" in str(exc.value)

    def test_unknown_action_names_the_field(self) -> None:
        data = wohnsitz()
        data["steps"][0]["action"] = "brew_coffee"
        with pytest.raises(DefinitionError) as exc:
            parse_definition(data, "x.yaml")
        assert "steps.0.automatic.action" in str(exc.value)

    def test_unmapped_action_outcome_is_refused(self) -> None:
        data = wohnsitz()
        data["steps"][1]["when"] = {"complete": "akte"}
        with pytest.raises(DefinitionError) as exc:
            parse_definition(data, "x.yaml")
        assert "['incomplete']" in str(exc.value)

    def test_invented_leika_key_is_refused(self) -> None:
        data = wohnsitz()
        data["service"] = "99999999999999"
        with pytest.raises(DefinitionError) as exc:
            parse_definition(data, "x.yaml")
        assert "not a LeiKa key of the reference table" in str(exc.value)

    def test_reminder_after_the_deadline_is_refused(self) -> None:
        data = wohnsitz()
        data["steps"][3]["deadline"]["reminder_before"] = "P20D"
        with pytest.raises(DefinitionError) as exc:
            parse_definition(data, "x.yaml")
        assert "steps.3.wait.deadline" in str(exc.value)

    def test_unknown_field_is_refused(self) -> None:
        data = wohnsitz()
        data["colour"] = "blau"
        with pytest.raises(DefinitionError) as exc:
            parse_definition(data, "x.yaml")
        assert "colour: Extra inputs are not permitted" in str(exc.value)

    def test_invalid_file_refuses_the_whole_directory(self, tmp_path: Path) -> None:
        good = wohnsitz()
        bad = copy.deepcopy(good)
        bad["name"], bad["start"] = "kaputt", "fehlt"
        bad["service"] = "99050012104000"
        (tmp_path / "a.yaml").write_text(yaml.safe_dump(good))
        (tmp_path / "b.yaml").write_text(yaml.safe_dump(bad))
        with pytest.raises(DefinitionError, match=r"(?s)b\.yaml.*start step 'fehlt' is not defined"):
            load_definitions(tmp_path)

    def test_two_definitions_for_one_service_are_refused(self) -> None:
        a = parse_definition(wohnsitz(), "a")
        other = wohnsitz()
        other["name"] = "zweite"
        with pytest.raises(DefinitionError, match="two definitions"):
            Registry([a, parse_definition(other, "b")])


class TestVersions:
    def test_newest_version_serves_new_cases_and_old_versions_stay_reachable(self) -> None:
        v1 = parse_definition(wohnsitz(), "v1")
        data = wohnsitz()
        data["version"] = 2
        data["statutory"]["processing_days"] = 7
        registry = Registry([v1, parse_definition(data, "v2")])
        newest = registry.for_service("99115005104000")
        assert newest is not None
        assert newest.version == 2
        assert registry.get("wohnsitz-anmeldung", 1).statutory.processing_days == 14


class TestCalendarMonths:
    @pytest.mark.parametrize(
        ("start", "months", "expected"),
        [((2026, 1, 31), 1, (2026, 2, 28)), ((2026, 11, 30), 3, (2027, 2, 28)), ((2028, 11, 29), 3, (2029, 2, 28)),
         ((2026, 5, 15), 3, (2026, 8, 15))],
    )
    def test_add_months_clamps_to_the_month_end(self, start: tuple[int, int, int], months: int,
                                                expected: tuple[int, int, int]) -> None:
        assert add_months(datetime(*start, 9, tzinfo=UTC), months) == datetime(*expected, 9, tzinfo=UTC)
