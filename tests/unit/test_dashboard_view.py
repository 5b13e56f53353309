"""Dashboard view model: charts and tables from published cells, German formatting, values that are missing."""

from __future__ import annotations

from datetime import date

from services.publisher.dashboard import service as view

F = view.Filters("06413000", "99115005104000", "day", date(2026, 3, 1), date(2026, 3, 2))
D1, D2 = "2026-03-01T00:00:00+01:00", "2026-03-02T00:00:00+01:00"


def _cell(period: str, metric: str, value: float | None, dim: str = "") -> view.Cell:
    return (period, "06413000", "99115005104000", metric, dim, value, False)


PER_PERIOD = [
    _cell(D1, "sessions_started", 40), _cell(D1, "sessions_submitted", 30),
    _cell(D2, "sessions_started", 12), _cell(D2, "sessions_submitted", 3),
    _cell(D2, "sessions_abandoned", 9),
]
TOTALS = [
    _cell("", "sessions_started", 52), _cell("", "sessions_submitted", 33), _cell("", "conversion_rate", 0.63),
    _cell("", "payment", 17, "paypal"), _cell("", "payment", 2, "rechnung"),
    _cell("", "feedback", 7, "5"), _cell("", "feedback", 6, "3"), _cell("", "feedback_count", 13),
    _cell("", "mean_stars", 4.08),
    _cell("", "duration_le", 20, "300"), _cell("", "duration_le", 4, "600"),
    _cell("", "duration_le", 9, "inf"), _cell("", "duration_p50_s", 275.0),
    _cell("", "duration_p90_s", None),
]
COMPARISON = [
    {"service": F.service, "metric": "conversion_rate", "value": 0.5, "suppressed": False, "hessen": 0.61,
     "hessen_suppressed": False, "size_class": None, "size_class_suppressed": False},
    {"service": F.service, "metric": "mean_stars", "value": 4.08, "suppressed": False, "hessen": 3.9,
     "hessen_suppressed": False, "size_class": 4.0, "size_class_suppressed": False},
]


def _charts() -> dict[str, view.Chart]:
    charts = view.municipality_charts(PER_PERIOD, TOTALS, COMPARISON, F, "", "Offenbach am Main")
    return {c.id: c for c in charts}


class TestMunicipalityCharts:
    def test_usage_over_time_has_a_point_per_period(self) -> None:
        usage = _charts()["nutzung"]
        assert usage.categories == ["01.03.2026", "02.03.2026"]
        series = {s.label: s.values for s in usage.series}
        assert series["Gestartet"] == (view.Value(40), view.Value(12))
        assert series["Abgeschlossen"] == (view.Value(30), view.Value(3))
        # a count the API does not list is a zero, not a gap
        assert series["Abgebrochen"][0] == view.Value(0)
        data = usage.data()
        assert data["datasets"][1] == {"label": "Abgeschlossen", "data": [30, 3]}

    def test_each_chart_links_the_csv_with_its_numbers(self) -> None:
        charts = _charts()
        assert charts["nutzung"].csv_url.startswith("/v1/kpis.csv?municipality=06413000&service=99115005104000")
        assert "family=funnel" in charts["nutzung"].csv_url
        assert charts["zahlarten"].csv_url.startswith("/v1/kpis/totals.csv?")
        assert "family=payment" in charts["zahlarten"].csv_url
        assert "from=2026-03-01&to=2026-03-02" in charts["zufriedenheit"].csv_url

    def test_published_values_are_shown_as_they_are(self) -> None:
        pay = _charts()["zahlarten"]
        assert pay.categories == ["PayPal", "Rechnung"]
        assert [view.fmt_cell(v, pay.unit) for v in pay.series[0].values] == ["17", "2"]
        assert dict(_charts()["nutzung"].facts)["Abschlussquote"] == "63,0 %"

    def test_feedback_shows_all_five_star_classes_and_the_mean(self) -> None:
        fb = _charts()["zufriedenheit"]
        assert [v.value for v in fb.series[0].values] == [0, 0, 6, 0, 7]
        assert dict(fb.facts)["Mittlere Bewertung"] == "4,08"

    def test_comparison_charts_rates_and_lists_other_kpis_as_facts(self) -> None:
        cmp = _charts()["vergleich"]
        assert cmp.categories == ["Abschlussquote"]
        assert [s.values[0] for s in cmp.series] == [view.Value(0.5), view.Value(0.61), view.Value(None)]
        assert dict(cmp.facts) == {"Mittlere Bewertung (Sterne) (Offenbach am Main / Hessen)": "4,08 / 3,90"}

    def test_a_chart_with_nothing_to_draw_says_why_in_german(self) -> None:
        charts = _charts()
        assert charts["bearbeitungsdauer"].blank_reason() == "Für die gewählten Filter liegen keine Daten vor."
        assert charts["nutzung"].blank_reason() is None
        no_cases = view.municipality_charts(
            PER_PERIOD, [_cell("", "feedback_count", 0)], [], F, "", "Offenbach am Main")
        reason = {c.id: c for c in no_cases}["zufriedenheit"].blank_reason()
        assert reason == "Im gewählten Zeitraum gab es hierzu keine Fälle."
        assert reason in view.summary({c.id: c for c in no_cases}["zufriedenheit"])

    def test_completion_time_buckets_in_order_with_percentiles(self) -> None:
        chart = _charts()["ausfuelldauer"]
        assert chart.categories == ["bis 5 min", "bis 10 min", "länger"]
        assert [v.value for v in chart.series[0].values] == [20, 4, 9]
        assert dict(chart.facts) == {"Median": "4,6 min", "90. Perzentil": "keine Daten"}


class TestSummary:
    def test_text_alternative_names_every_value_of_a_short_chart(self) -> None:
        text = view.summary(_charts()["zahlarten"])
        assert text.startswith("Balkendiagramm: Zahlarten.")
        assert "PayPal 17" in text
        assert "Rechnung 2" in text

    def test_text_alternative_of_an_empty_chart_says_so(self) -> None:
        assert "keine Daten" in view.summary(_charts()["bearbeitungsdauer"])


class TestFormatting:
    def test_german_numbers(self) -> None:
        assert view.fmt_number(12345, "count") == "12.345"
        assert view.fmt_number(4.2199, "decimal") == "4,22"
        assert view.fmt_cell(view.Value(None), "decimal") == "keine Daten"
        assert view.fmt_number(0.4567, "percent") == "45,7 %"
        assert view.fmt_number(86400, "seconds") == "1 Tag"
        assert view.fmt_number(5400, "seconds") == "1,5 Std."
        assert view.bucket_label("3600") == "bis 1 Std."
        assert view.bucket_label("259200") == "bis 3 Tage"
        assert view.bucket_label("inf") == "länger"

    def test_service_outside_the_reference_table_stays_selectable(self) -> None:
        options = view.service_options("98000000000001")
        assert options[0] == ("98000000000001", "Leistung 98000000000001")
        assert len(view.service_options()) == len(options) - 1
