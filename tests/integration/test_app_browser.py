"""The Open Smart City app in Chromium: valid manifest, an active service worker, favourites on the device only,
the last viewed city readable offline, accessibility (axe-core)."""

from __future__ import annotations

from typing import Any

import httpx
from playwright.async_api import Browser

from kp.local import ServiceProcess
from tests.browser import AXE, local_context, require_browser

MARBURG = ("06534014", "Marburg")

require_browser()




async def _axe(page: Any) -> list[dict[str, Any]]:
    await page.add_script_tag(path=str(AXE))
    result = await page.evaluate("async () => (await axe.run(document)).violations")
    return [{"id": v["id"], "nodes": [n["target"] for n in v["nodes"]]} for v in result
            if v["impact"] in ("serious", "critical")]


class TestApp:
    async def test_manifest_is_installable(self, publisher: ServiceProcess) -> None:
        async with httpx.AsyncClient(base_url=publisher.url) as client:
            resp = await client.get("/app.webmanifest")
            assert resp.headers["content-type"].startswith("application/manifest+json")
            manifest = resp.json()
            assert manifest["display"] == "standalone"
            assert manifest["start_url"] == "/app"
            assert manifest["name"]
            assert manifest["short_name"]
            sizes = {i["sizes"] for i in manifest["icons"] if i["type"] == "image/png"}
            assert {"192x192", "512x512"} <= sizes
            for icon in manifest["icons"]:
                png = await client.get(icon["src"])
                assert png.status_code == 200
                assert png.content[:8] == b"\x89PNG\r\n\x1a\n"
                width, height = int.from_bytes(png.content[16:20], "big"), int.from_bytes(png.content[20:24], "big")
                assert f"{width}x{height}" == icon["sizes"]
            start = await client.get(manifest["start_url"])
            assert start.status_code == 200
            assert 'rel="manifest"' in start.text

    async def test_service_worker_favourites_and_the_last_city_offline(
        self, publisher: ServiceProcess, browser: Browser
    ) -> None:
        context, guard = await local_context(browser, locale="de-DE", viewport={"width": 390, "height": 800})
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        try:
            await page.goto(f"{publisher.url}/app")
            assert await _axe(page) == []
            state = await page.evaluate("""async () => {
                const reg = await navigator.serviceWorker.ready;
                return {active: reg.active !== null, scope: reg.scope}; }""")
            assert state == {"active": True, "scope": f"{publisher.url}/"}
            await page.get_by_role("link", name=MARBURG[1]).first.click()
            await page.wait_for_url(f"**/app/{MARBURG[0]}")
            await page.wait_for_function("() => navigator.serviceWorker.controller !== null")
            await page.get_by_role("button", name="Als Favorit merken").click()
            await page.get_by_role("status").filter(has_text="ist jetzt ein Favorit").wait_for()
            assert await _axe(page) == []
            # the city's page once more under the worker's control, so the worker keeps it
            await page.reload()
            await page.locator("#kennzahlen dt").first.wait_for()
            assert await context.cookies() == []

            await context.set_offline(True)
            await page.goto(f"{publisher.url}/app/{MARBURG[0]}")
            assert await page.locator("h1").inner_text() == MARBURG[1]
            await page.goto(f"{publisher.url}/app")
            await page.get_by_role("link", name=MARBURG[1]).last.wait_for()
            favourites = await page.locator("#favoriten a").all_inner_texts()
            assert favourites == [MARBURG[1]]
            assert errors == []
            guard.assert_local_only()
        finally:
            await context.close()
