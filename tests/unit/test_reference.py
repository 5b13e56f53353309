"""Reference data: the six member cities and the verified LeiKa keys, with sources, never invented."""

from __future__ import annotations

from shared.reference import municipalities, municipality_by_ags, service_by_key, services


class TestMunicipalities:
    def test_six_member_cities_with_confirmed_keys(self) -> None:
        assert {m.ags for m in municipalities()} == {
            "06413000", "06534014", "06531005", "06533009", "06631009", "06532023"
        }

    def test_ars_extends_ags(self) -> None:
        for m in municipalities():
            assert len(m.ars) == 12
            assert m.ars[:5] == m.ags[:5]
            assert m.ars[-3:] == m.ags[-3:]

    def test_geocoding_uri_follows_dcat_ap_de_pattern(self) -> None:
        for m in municipalities():
            assert m.political_geocoding_uri == (
                f"http://dcat-ap.de/def/politicalGeocoding/municipalityKey/{m.ags}"
            )

    def test_every_row_has_a_source_and_population(self) -> None:
        for m in municipalities():
            assert m.source
            assert m.population > 0

    def test_giessen_is_not_pohlheim(self) -> None:
        assert municipality_by_ags()["06531005"].name == "Gießen"
        assert "06531014" not in municipality_by_ags()


class TestServices:
    def test_keys_are_14_digits_and_unique(self) -> None:
        keys = [s.leika_key for s in services()]
        assert len(keys) == 24 == len(set(keys))
        assert all(len(k) == 14 and k.isdigit() for k in keys)

    def test_missing_values_stay_missing(self) -> None:
        hundesteuer = service_by_key()["99102013104000"]
        assert hundesteuer.ozg_leistung is None
        assert hundesteuer.typ is None
        assert hundesteuer.source
