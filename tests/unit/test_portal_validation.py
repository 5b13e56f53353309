"""Portal logic without I/O: dataset validation, file checks, CKAN parameters, catalog descriptors."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import orjson
import pytest

from services.publisher.portal import ckan, vocab
from services.publisher.portal.catalog import descriptor
from services.publisher.portal.repository import AllOf, Cond, Everything
from services.publisher.portal.schemas import Dataset
from services.publisher.portal.service import preview_rows
from services.publisher.portal.validation import check_file, parse_dataset
from shared.http import ProblemError
from tests.factories import MARBURG, portal_dataset


class TestParseDataset:
    def test_valid_description_gets_default_media_type(self) -> None:
        ds = parse_dataset(orjson.dumps(portal_dataset()))
        assert ds.distributions[0].media_type == "application/json"

    def test_problem_names_nested_fields(self) -> None:
        doc = portal_dataset()
        doc["distributions"][0]["format"] = "EXE"
        doc["contact_point"] = {"name": "Team", "email": "kaputt"}
        with pytest.raises(ProblemError) as exc:
            parse_dataset(orjson.dumps(doc))
        assert exc.value.status == 422
        assert {e["field"] for e in exc.value.extra["errors"]} == {"distributions[0].format", "contact_point.email"}

    @pytest.mark.parametrize("raw", [b"[1, 2]", b"{kaputt", b""])
    def test_body_that_is_no_object_is_a_bad_request(self, raw: bytes) -> None:
        with pytest.raises(ProblemError) as exc:
            parse_dataset(raw)
        assert exc.value.status == 400

    def test_every_allowed_licence_is_in_the_dcat_ap_de_vocabulary(self) -> None:
        assert all(iri.startswith("http://dcat-ap.de/def/licenses/") for iri in vocab.LICENCES)
        assert "http://dcat-ap.de/def/licenses/dl-by-de/2.0" in vocab.LICENCES


class TestCheckFile:
    def test_good_csv_gets_a_valid_report_and_checksum(self) -> None:
        body = b"a,b\n1,2\n3,4\n"
        checked = check_file("x.csv", body, 1000)
        assert checked.report is not None
        assert checked.report["valid"] is True
        assert checked.report["rows"] == 2
        assert checked.sha256 == hashlib.sha256(body).hexdigest()
        assert checked.media_type == "text/csv"

    def test_duplicate_header_is_refused_with_report(self) -> None:
        with pytest.raises(ProblemError) as exc:
            check_file("x.csv", b"a,a\n1,2\n", 1000)
        assert exc.value.extra["report"]["errors"][0]["type"] == "duplicate-label"

    @pytest.mark.parametrize("name", ["../x.csv", "a/b.csv", ".hidden.csv", 'x".csv'])
    def test_path_like_names_are_refused(self, name: str) -> None:
        with pytest.raises(ProblemError) as exc:
            check_file(name, b"a\n1\n", 1000)
        assert exc.value.status == 400

    def test_size_limit(self) -> None:
        with pytest.raises(ProblemError) as exc:
            check_file("x.json", b"[" + b"1," * 600 + b"1]", 1000)
        assert exc.value.status == 413


class TestCkanParameters:
    def test_fq_maps_organization_groups_format_and_tags(self) -> None:
        p = ckan.parse_search(
            {"q": "Parkplatz", "fq": 'organization:marburg groups:tran res_format:GeoJSON tags:"Öffentlicher Raum"',
             "rows": "5", "start": "10"})
        assert p.where == AllOf((
            Cond("text", "Parkplatz"),
            AllOf((Cond("municipality", MARBURG), Cond("theme", vocab.THEME_BASE + "TRAN"), Cond("format", "GEOJSON"),
                   Cond("keyword", "Öffentlicher Raum"))),
        ))
        assert p.rank_text == "Parkplatz"
        assert (p.rows, p.start, p.facet_limit) == (5, 10, 50)
        assert p.facet_fields == list(ckan.DEFAULT_FACETS)

    @pytest.mark.parametrize("params", [{"rows": "-1"}, {"rows": "viele"}, {"sort": "zufall asc"},
                                        {"facet.field": '["farbe"]'}, {"facet.field": "kein json"}])
    def test_bad_values_are_validation_errors(self, params: dict[str, str]) -> None:
        with pytest.raises(ckan.CkanError) as exc:
            ckan.parse_search(params)
        assert exc.value.status == 409
        assert exc.value.error()["__type"] == "Validation Error"

    def test_rows_above_the_maximum_are_capped_like_ckan(self) -> None:
        assert ckan.parse_search({"rows": "5000"}).rows == ckan.MAX_ROWS

    def test_fl_selects_fields(self) -> None:
        assert ckan.parse_search({"fl": "id,name"}).fields == ["id", "name"]
        assert ckan.parse_search({"fl": "*"}).fields is None

    def test_star_query_means_everything(self) -> None:
        p = ckan.parse_search({"q": "*:*"})
        assert p.where == AllOf((Everything(),))
        assert p.rank_text is None

    def test_organization_names_are_ascii_slugs(self) -> None:
        names = {o for o in ckan._org_by_name()}
        assert names == {"offenbach-am-main", "marburg", "giessen", "limburg-a-d-lahn", "fulda", "wetzlar"}


class TestCatalogDescriptor:
    def _dataset(self, publisher: str) -> Dataset:
        now = datetime(2025, 1, 2, tzinfo=UTC)
        doc = portal_dataset(municipality=MARBURG)
        return Dataset.model_validate({
            **doc, "id": "00000000-0000-0000-0000-000000000001", "status": "published", "version": 1,
            "publisher": {"name": publisher}, "spatial": "x", "created": now, "modified": now,
            "distributions": [{**doc["distributions"][0], "id": "d1", "media_type": "application/json",
                               "licence": doc["licence"]}],
        })

    def test_municipality_as_publisher_shares_the_kpi_agent(self) -> None:
        d = descriptor(self._dataset("Marburg"), "https://example.org")
        assert d.publisher.id == MARBURG
        assert d.spatial_ags == MARBURG
        assert d.distributions[0].license == "http://dcat-ap.de/def/licenses/dl-by-de/2.0"

    def test_other_publisher_gets_an_agent_of_its_own(self) -> None:
        d = descriptor(self._dataset("Fachdienst Verkehr"), "https://example.org")
        assert d.publisher.id.startswith(MARBURG + "-")
        assert d.landing_page == f"https://example.org/portal/datensaetze/{d.id}"


class TestPreviewRows:
    @pytest.mark.parametrize("sep", [",", ";", "\t"])
    def test_delimiter_is_detected(self, sep: str) -> None:
        fee = "1,50" if sep != "," else "1.50"
        text = sep.join(["Ort", "Plätze", "Gebühr"]) + "\n" + sep.join(["Markt", "12", fee]) + "\n"
        header, rows = preview_rows(text, 10)
        assert header == ["Ort", "Plätze", "Gebühr"]
        assert rows[0][:2] == ["Markt", "12"]

    def test_rows_are_capped(self) -> None:
        header, rows = preview_rows("a,b\n" + "1,2\n" * 50, 10)
        assert header == ["a", "b"]
        assert len(rows) == 10
