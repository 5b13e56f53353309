"""The German dashboard in Debian's Chromium (headless, Playwright): numbers, filters, accessibility.

The publisher runs as its own process against the session's PostgreSQL. Each test seeds a hand-made dataset
for two member cities under a LeiKa-like key of its own, so the page shows only that data.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from playwright.async_api import Browser, Page

from kp.local import ServiceProcess
from shared import ckm
from shared.reference import municipalities
from tests.browser import ARTIFACTS, AXE, local_context, require_browser
from tests.integration.test_dashboard import unchanged_key

ROOT = Path(__file__).resolve().parents[2]
GIESSEN = next(m for m in municipalities() if m.ags == "06531005")
MARBURG = next(m for m in municipalities() if m.ags == "06534014")
DAYS = [date(2021, 3, 1) + timedelta(days=i) for i in range(3)]
USAGE = {"sessions_started": "Gestartet", "sessions_submitted": "Abgeschlossen", "sessions_abandoned": "Abgebrochen"}

require_browser()




@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context, guard = await local_context(browser, locale="de-DE", viewport={"width": 1280, "height": 900})
    p = await context.new_page()
    p.guard = guard  # type: ignore[attr-defined]
    errors: list[str] = []
    p.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    p.on("pageerror", lambda exc: errors.append(str(exc)))
    p.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    p.errors = errors  # type: ignore[attr-defined]
    try:
        yield p
        guard.assert_local_only()  # every test of this module: no request left the host
    finally:
        await context.close()


async def _seed(db: asyncpg.Connection, service: str) -> None:
    """Hand-made daily KPIs that satisfy the identities the aggregator guarantees (channel and device add up to
    sessions started, completion-time buckets to submissions, abandonment steps to abandonments, processing
    buckets to closed cases). Gießen's third day has 2 submissions. Every row is stored at a key sum where the
    perturbation table leaves its count as it is, so the charts show these hand-made numbers."""
    rows: list[tuple[date, str, str, str, int]] = []
    cities = {
        GIESSEN.ags: {"sessions_started": [40, 55, 30], "sessions_submitted": [25, 33, 2],
                      "sessions_abandoned": [15, 22, 28]},
        MARBURG.ags: {"sessions_started": [60, 60, 60], "sessions_submitted": [30, 45, 50],
                      "sessions_abandoned": [30, 15, 10]},
    }
    for ags, metrics in cities.items():
        for i, d in enumerate(DAYS):
            started, submitted = metrics["sessions_started"][i], metrics["sessions_submitted"][i]
            rows += [(d, ags, m, "", values[i]) for m, values in metrics.items()]
            rows += [(d, ags, "channel", "web", started), (d, ags, "device", "desktop", started),
                     (d, ags, "duration_le", "600", submitted),
                     (d, ags, "abandoned_after_step", "1", metrics["sessions_abandoned"][i])]
    rows += [(DAYS[0], GIESSEN.ags, "step_completed", s, v) for s, v in (("1", 40), ("2", 32), ("3", 25))]
    rows += [(DAYS[1], GIESSEN.ags, "payment", m, v) for m, v in (("paypal", 12), ("sepa_lastschrift", 21))]
    rows += [(DAYS[1], GIESSEN.ags, "auth", a, v) for a, v in (("bundid_basis:substantiell", 20),
                                                                ("eid:hoch", 13))]
    rows += [(DAYS[1], GIESSEN.ags, "feedback", s, v) for s, v in (("5", 14), ("4", 9), ("2", 6))]
    rows += [(DAYS[2], GIESSEN.ags, "processing_le", b, v) for b, v in (("86400", 9), ("604800", 11))]
    rows += [(DAYS[2], GIESSEN.ags, "cases_closed", "approved", 20)]
    monthly: dict[tuple[date, str, str, str], int] = {}
    for d, ags, metric, dim, v in rows:
        key = (d.replace(day=1), ags, metric, dim)
        monthly[key] = monthly.get(key, 0) + v
    await db.executemany(
        """INSERT INTO kpi_values (granularity, period_start, municipality, service, metric, dimension, value,
                                   key_sum)
           VALUES ($1, $2::date::timestamp AT TIME ZONE 'Europe/Berlin', $3, $4, $5, $6, $7, $8)""",
        [("day", d, ags, service, metric, dim, v, unchanged_key(v)) for d, ags, metric, dim, v in rows]
        + [("month", d, ags, service, metric, dim, v, unchanged_key(v))
           for (d, ags, metric, dim), v in monthly.items()],
    )


@pytest.fixture
async def service_key(db: asyncpg.Connection, unique: str) -> str:
    key = "98" + str(int(unique, 16) % 10**12).zfill(12)
    await _seed(db, key)
    return key


def _query(service: str, period: str = "day") -> dict[str, str]:
    return {"service": service, "period": period, "from": DAYS[0].isoformat(), "to": DAYS[-1].isoformat()}


def _url(publisher: ServiceProcess, path: str, service: str) -> str:
    return f"{publisher.url}{path}?{httpx.QueryParams(_query(service))}"


async def _chart(page: Page, chart_id: str) -> dict[str, Any]:
    data: dict[str, Any] = await page.evaluate(
        """id => { const c = Chart.getChart(id + '-canvas');
                   return {labels: c.data.labels,
                           datasets: c.data.datasets.map(d => ({label: d.label, data: d.data}))}; }""",
        chart_id,
    )
    return data


def _api_series(items: list[dict[str, Any]], ags: str) -> dict[str, dict[str, float | None]]:
    """metric -> period start -> value from the API's JSON items."""
    out: dict[str, dict[str, float | None]] = {}
    for it in items:
        if it["municipality"] == ags and it["metric"] in USAGE and it["dimension"] == "":
            out.setdefault(it["metric"], {})[it["period_start"]] = None if it["suppressed"] else it["value"]
    return out


async def _assert_usage_matches_api(page: Page, api: httpx.AsyncClient, service: str, period: str) -> None:
    resp = await api.get("/v1/kpis.json", params={**_query(service, period), "municipality": GIESSEN.ags,
                                                  "family": "funnel"})
    assert resp.status_code == 200, resp.text
    expected = _api_series(resp.json()["items"], GIESSEN.ags)
    starts = sorted({p for series in expected.values() for p in series})
    chart = await _chart(page, "nutzung")
    assert len(chart["labels"]) == len(starts)
    for ds in chart["datasets"]:
        metric = next(m for m, label in USAGE.items() if label == ds["label"])
        assert ds["data"] == [expected.get(metric, {}).get(p, 0) for p in starts], metric


async def _axe(page: Page) -> list[dict[str, Any]]:
    await page.add_script_tag(path=str(AXE))
    result: dict[str, Any] = await page.evaluate(
        """() => axe.run(document, {runOnly: {type: 'tag',
               values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice']}})"""
    )
    return [v for v in result["violations"] if v["impact"] in ("serious", "critical")]


class TestMunicipalityDashboard:
    async def test_charts_show_the_api_numbers_and_a_filter_change_updates_them(
        self, publisher: ServiceProcess, page: Page, service_key: str
    ) -> None:
        async with httpx.AsyncClient(base_url=publisher.url) as api:
            resp = await page.goto(_url(publisher, f"/dashboard/{GIESSEN.ags}", service_key))
            assert resp is not None
            assert resp.status == 200
            await page.wait_for_selector("figure[data-chart='nutzung'][data-rendered='true']")
            await _assert_usage_matches_api(page, api, service_key, "day")
            chart = await _chart(page, "nutzung")
            submitted = next(d for d in chart["datasets"] if d["label"] == "Abgeschlossen")
            started = next(d for d in chart["datasets"] if d["label"] == "Gestartet")
            assert started["data"] == [40, 55, 30]  # the hand-made numbers
            # a small count is published (perturbed; here at a key that leaves it), nothing is withheld
            assert submitted["data"] == [25, 33, 2]
            cell = page.locator("table[data-table='nutzung'] tbody tr").nth(2).locator("td").nth(1)
            assert await cell.get_attribute("data-suppressed") is None
            assert "unterdrückt" not in (await cell.text_content() or "")

            payment = await _chart(page, "zahlarten")
            assert dict(zip(payment["labels"], payment["datasets"][0]["data"], strict=True)) == {
                "PayPal": 12, "SEPA-Lastschrift": 21}
            feedback = await _chart(page, "zufriedenheit")
            assert feedback["datasets"][0]["data"] == [0, 6, 0, 9, 14]
            compare = await _chart(page, "vergleich")
            assert compare["labels"] == ["Abschlussquote", "Abbruchquote"]

            await page.select_option("#f-period", "month")
            async with page.expect_navigation():
                await page.click("button[type=submit]")
            await page.wait_for_selector("figure[data-chart='nutzung'][data-rendered='true']")
            assert "period=month" in page.url
            await _assert_usage_matches_api(page, api, service_key, "month")
            monthly = await _chart(page, "nutzung")
            assert monthly["labels"] == ["03/2021"]
            started = next(d for d in monthly["datasets"] if d["label"] == "Gestartet")
            assert started["data"] == [125]
        assert page.errors == []  # type: ignore[attr-defined]

    async def test_no_serious_accessibility_violations_and_screenshot(
        self, publisher: ServiceProcess, page: Page, service_key: str
    ) -> None:
        await page.goto(_url(publisher, f"/dashboard/{GIESSEN.ags}", service_key))
        await page.wait_for_selector("figure[data-chart][data-rendered='true']")
        for details in await page.locator("details.table-fallback").all():
            await details.locator("summary").click()
        violations = await _axe(page)
        assert violations == [], [(v["id"], v["help"], [n["target"] for n in v["nodes"]]) for v in violations]
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "dashboard-giessen.png"), full_page=True)
        assert page.errors == []  # type: ignore[attr-defined]

    async def test_keyboard_reaches_filters_and_downloads(
        self, publisher: ServiceProcess, page: Page, service_key: str
    ) -> None:
        await page.goto(_url(publisher, f"/dashboard/{GIESSEN.ags}", service_key))
        await page.keyboard.press("Tab")
        assert await page.evaluate("document.activeElement.textContent") == "Zum Inhalt springen"
        focused: set[str] = set()
        for _ in range(40):
            await page.keyboard.press("Tab")
            focused.add(await page.evaluate("document.activeElement.id || document.activeElement.textContent"))
        assert {"f-service", "f-period", "f-from", "f-to"} <= focused


class TestHessenDashboard:
    async def test_overview_lists_each_city_and_passes_axe(
        self, publisher: ServiceProcess, page: Page, service_key: str
    ) -> None:
        await page.set_viewport_size({"width": 390, "height": 844})  # a phone
        resp = await page.goto(_url(publisher, "/dashboard", service_key))
        assert resp is not None
        assert resp.status == 200
        await page.wait_for_selector("figure[data-chart='nutzung-kommunen'][data-rendered='true']")
        chart = await _chart(page, "nutzung-kommunen")
        values = dict(zip(chart["labels"], next(d for d in chart["datasets"] if d["label"] == "Gestartet")["data"],
                          strict=True))
        # a city's range total is a cell of its own: the three days' counts at the sum of their keys
        for city, days in ((GIESSEN, (40, 55, 30)), (MARBURG, (60, 60, 60))):
            assert values[city.name] == ckm.perturb(sum(days), ckm.cell_key([unchanged_key(v) for v in days]))
        assert values["Fulda"] is None  # no data at all: shown as "keine Daten"
        assert await _axe(page) == []
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "dashboard-hessen-mobile.png"), full_page=True)
        assert page.errors == []  # type: ignore[attr-defined]



class TestApiDocs:
    async def test_swagger_ui_renders_the_openapi_document_without_internet(
        self, publisher: ServiceProcess, page: Page
    ) -> None:
        resp = await page.goto(f"{publisher.url}/docs")
        assert resp is not None
        assert resp.status == 200
        title = page.locator(".swagger-ui .info .title")
        await title.wait_for()
        assert (await title.inner_text()).startswith("Kommunal-Pulse Open Data")
        await page.locator(".opblock").first.wait_for()
        assert page.errors == []  # type: ignore[attr-defined]
        # the page fixture then asserts that no request left the host

def test_vendored_chart_library_matches_npm_package() -> None:
    vendored = ROOT / "services" / "publisher" / "dashboard" / "static" / "vendor" / "chartjs" / "chart.umd.min.js"
    installed = ROOT / "node_modules" / "chart.js" / "dist" / "chart.umd.min.js"
    if not installed.exists():
        pytest.skip("node_modules/chart.js missing: run `npm install`")
    assert vendored.read_bytes() == installed.read_bytes(), "copy node_modules/chart.js/dist/chart.umd.min.js again"
    assert (vendored.parent / "LICENSE.md").read_text().startswith("The MIT License")
