"""The dashboard's web-usage charts: the most viewed pages and page views per device and referrer class."""

from __future__ import annotations

from datetime import date

from services.publisher.dashboard.service import CellIndex, Filters, Value, web_usage_charts


def _cells(rows: list[tuple[str, str, int | None]]) -> CellIndex:
    return CellIndex([("", "06534014", "99115005104000", m, d, v, False) for m, d, v in rows])


class TestWebUsageCharts:
    def test_top_pages_and_classes(self) -> None:
        rows: list[tuple[str, str, int | None]] = [("page_views", f"/seite-{i:02d}", 100 + i) for i in range(12)]
        rows += [("page_views", "/klein", None), ("page_views_device", "mobile", 700),
                 ("page_views_device", "desktop", 500), ("page_views_referrer", "search", 900),
                 ("page_views_referrer", "direct", 300), ("page_views_referrer", "social", 200),
                 ("page_views_referrer", "municipal", 100)]
        f = Filters("06534014", "99115005104000", "day", date(2026, 3, 1), date(2026, 3, 31))
        pages, classes = web_usage_charts(_cells(rows), f, "")
        assert pages.categories == [f"/seite-{i:02d}" for i in range(11, 1, -1)]  # ten, most viewed first
        assert pages.series[0].values[0] == Value(111)
        assert classes.categories == ["Desktop", "Mobilgerät", "Suchmaschine", "soziales Netzwerk",
                                      "andere Verwaltungswebsite", "direkt (ohne Herkunft)"]
        assert [v.value for v in classes.series[0].values] == [500, 700, 900, 200, 100, 300]
        assert "family=usage" in classes.csv_url
