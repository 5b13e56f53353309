"""The portal pages in Debian's Chromium (headless, Playwright): search, facets, dataset page, accessibility.

The publisher runs as its own process against the session's PostgreSQL; each test registers datasets under a
keyword of its own and searches for it, so other tests' datasets never show.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx
import pytest
from playwright.async_api import Browser, Page

from kp.local import ServiceProcess
from services.publisher.portal import service
from tests.browser import ARTIFACTS, AXE, local_context, require_browser
from tests.factories import MARBURG, OFFENBACH, portal_dataset

CSV = b"standort,stellplaetze,gebuehr_euro\nMarktplatz,120,1.50\nBahnhof,340,1.00\nHafen,80,2.00\n"

require_browser()




async def _page(browser: Browser, width: int, height: int) -> tuple[Page, list[str]]:
    """A page whose `errors` also list every request that left the host (each test asserts `errors == []`)."""
    context, guard = await local_context(browser, locale="de-DE", viewport={"width": width, "height": height})
    p = await context.new_page()
    errors: list[str] = guard.foreign
    p.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    p.on("pageerror", lambda exc: errors.append(str(exc)))
    return p, errors


@pytest.fixture
async def seeded(publisher: ServiceProcess, db: asyncpg.Connection, unique: str) -> dict[str, Any]:
    tag = f"b{unique}"
    keys = {OFFENBACH: await service.issue_key(db, f"o-{unique}", [OFFENBACH]),
            MARBURG: await service.issue_key(db, f"m-{unique}", [MARBURG])}
    parking = portal_dataset(title="Parkplätze und Parkhäuser in der Innenstadt", keywords=["Parken", tag])
    air = portal_dataset(municipality=MARBURG, title="Luftqualität an Parkplätzen", keywords=[tag],
                         themes=["http://publications.europa.eu/resource/authority/data-theme/ENVI"],
                         description="Feinstaub- und Stickstoffdioxid-Messwerte an großen Parkplätzen.")
    async with httpx.AsyncClient(base_url=publisher.url) as c:
        for doc in (parking, air):
            r = await c.post("/v1/portal/datasets", json=doc, headers={"X-API-Key": keys[doc["municipality"]]})
            assert r.status_code == 201, r.text
        r = await c.put(f"/v1/portal/datasets/{parking['name']}/files/parkplaetze.csv", content=CSV,
                        params={"title": "Parkplätze (CSV)"}, headers={"X-API-Key": keys[OFFENBACH]})
        assert r.status_code == 201, r.text
    return {"tag": tag, "parking": parking, "air": air}


async def _axe_serious(page: Page) -> list[dict[str, Any]]:
    await page.add_script_tag(path=str(AXE))
    result = await page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]]}
        for v in result["violations"] if v["impact"] in ("serious", "critical")
    ]


class TestSearchPage:
    async def test_search_facets_and_dataset_page_work_and_are_accessible(
        self, browser: Browser, publisher: ServiceProcess, seeded: dict[str, Any]
    ) -> None:
        page, errors = await _page(browser, 1280, 900)
        await page.goto(f"{publisher.url}/portal")
        assert await page.title() == "Datensätze \u2013 Kommunal-Pulse Datenportal"
        await page.get_by_label("Suchbegriff").fill(f"Parkplatz {seeded['tag']}")
        await page.get_by_role("button", name="Suchen").click()
        await page.wait_for_url("**/portal?q=*")
        heading = page.locator("#treffer")
        assert (await heading.inner_text()).startswith("2 Datensätze")
        results = page.locator(".results h3 a")
        assert sorted(await results.all_inner_texts()) == sorted([seeded["parking"]["title"],
                                                                  seeded["air"]["title"]])
        assert await _axe_serious(page) == []

        await page.get_by_role("link", name="Marburg").click()
        await page.wait_for_url("**kommune=06534014*")
        assert (await heading.inner_text()).startswith("1 Datensatz")
        assert await results.all_inner_texts() == [seeded["air"]["title"]]
        await page.get_by_role("link", name="Marburg").click()  # toggles the filter off again
        await page.wait_for_function("document.querySelector('#treffer').innerText.startsWith('2 ')")

        await page.get_by_role("link", name=seeded["parking"]["title"]).click()
        await page.wait_for_url(f"**/portal/datensaetze/{seeded['parking']['name']}")
        assert await page.locator("h1").inner_text() == seeded["parking"]["title"]
        preview = page.locator("table.preview")
        assert await preview.locator("thead th").all_inner_texts() == ["standort", "stellplaetze", "gebuehr_euro"]
        assert await preview.locator("tbody tr").count() == 3
        assert await preview.locator("tbody tr").first.locator("td").all_inner_texts() == ["Marktplatz", "120", "1.50"]
        assert "gültig" in await page.get_by_text("Prüfung mit Frictionless").inner_text()
        download = page.get_by_role("link", name="Parkplätze (CSV)")
        href = await download.get_attribute("href")
        assert href is not None
        async with httpx.AsyncClient() as c:
            assert (await c.get(href)).content == CSV
        dashboard = page.get_by_role("link", name="Kennzahlen-Dashboard Offenbach am Main")
        assert await dashboard.get_attribute("href") == f"{publisher.url}/dashboard/{OFFENBACH}"
        assert await _axe_serious(page) == []
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "portal-dataset.png"), full_page=True)
        assert errors == []
        await page.context.close()

    async def test_mobile_view_has_no_horizontal_scroll_and_is_accessible(
        self, browser: Browser, publisher: ServiceProcess, seeded: dict[str, Any]
    ) -> None:
        page, errors = await _page(browser, 375, 740)
        await page.goto(f"{publisher.url}/portal?q={seeded['tag']}&sort=date")
        assert await page.locator(".results li").count() == 2
        assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        assert await _axe_serious(page) == []
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "portal-search-mobile.png"), full_page=True)
        assert errors == []
        await page.context.close()

    async def test_withdrawn_dataset_page_says_so(
        self, browser: Browser, publisher: ServiceProcess, seeded: dict[str, Any], db: asyncpg.Connection,
        unique: str,
    ) -> None:
        key = await service.issue_key(db, f"w-{unique}", [MARBURG])
        async with httpx.AsyncClient(base_url=publisher.url) as c:
            r = await c.delete(f"/v1/portal/datasets/{seeded['air']['name']}", headers={"X-API-Key": key})
        assert r.status_code == 200
        page, errors = await _page(browser, 1280, 900)
        resp = await page.goto(f"{publisher.url}/portal/datensaetze/{seeded['air']['name']}")
        assert resp is not None
        assert resp.status == 410
        assert await page.locator("h1").inner_text() == "Datensatz zurückgezogen"
        assert [e for e in errors if "410" not in e] == []  # the page's own 410 is logged as a console error
        await page.context.close()
