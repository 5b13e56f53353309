"""Portal URLs are absolute http(s) IRIs by RFC 3987; texts follow the contracts' string rule."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from services.publisher.portal.schemas import DatasetIn
from tests.factories import portal_dataset

ARCGIS = 'https://services.arcgis.com/x/arcgis/rest/services/Baeume/FeatureServer/0/query?where={"a":1}&f=json'


def _with_access_url(url: str) -> dict[str, Any]:
    return portal_dataset(distributions=[{"title": "Daten", "access_url": url, "format": "JSON"}])


def _fields(exc: ValidationError) -> set[tuple[str, ...]]:
    return {tuple(str(p) for p in e["loc"] if not str(p).startswith("function-")) for e in exc.errors()}


class TestUrls:
    @pytest.mark.parametrize("url", [
        ARCGIS, "https://example.org/a b", "https://example.org/<x>", "https://example.org/a|b",
        "https://example.org/a^b", "https://example.org/a`b", "https://example.org/a\\b", "https://example.org/%zz",
        "http://", "ftp://example.org/x", "https:example.org", "https://example.org/\u0085",
    ])
    def test_non_iris_are_refused_naming_the_field(self, url: str) -> None:
        with pytest.raises(ValidationError) as exc:
            DatasetIn.model_validate(_with_access_url(url))
        assert ("distributions", "0", "access_url") in _fields(exc.value)

    @pytest.mark.parametrize("url", [
        ARCGIS.replace('{"a":1}', "%7B%22a%22%3A1%7D"), "https://example.org/straße?q=ä#teil",
        "http://例え.jp/パス", "https://example.org:8443/a;b=c",
    ])
    def test_iris_are_accepted(self, url: str) -> None:
        assert DatasetIn.model_validate(_with_access_url(url)).distributions[0].access_url == url

    @pytest.mark.parametrize("field", ["landing_page"])
    def test_every_url_field_is_checked(self, field: str) -> None:
        with pytest.raises(ValidationError) as exc:
            DatasetIn.model_validate(portal_dataset(**{field: ARCGIS}))
        assert (field,) in _fields(exc.value)
        with pytest.raises(ValidationError):
            DatasetIn.model_validate(portal_dataset(contact_point={"name": "Team", "url": ARCGIS}))
        with pytest.raises(ValidationError):
            DatasetIn.model_validate(portal_dataset(publisher={"name": "Amt", "url": ARCGIS}))

    def test_email_must_be_writable_as_mailto_iri(self) -> None:
        with pytest.raises(ValidationError):
            DatasetIn.model_validate(portal_dataset(contact_point={"name": "Team", "email": 'a"<b>@example.org'}))


class TestTexts:
    @pytest.mark.parametrize("char", ["\x00", "\x0b", "\x1b", "\x85", "\ufffe"])
    def test_control_characters_are_refused(self, char: str) -> None:
        with pytest.raises(ValidationError) as exc:
            DatasetIn.model_validate(portal_dataset(title=f"Park{char}plätze"))
        assert ("title",) in _fields(exc.value)

    def test_descriptions_keep_line_breaks(self) -> None:
        text = "Erste Zeile.\n\tZweite Zeile mit Tabulator."
        assert DatasetIn.model_validate(portal_dataset(description=text)).description == text
