"""The tracker and the feedback widget on a demo municipal page, in Debian's Chromium (headless, Playwright).

The demo page is served from its own origin (`http://localhost:<port>`, under a strict Content-Security-Policy)
and embeds both scripts from ingest (`http://127.0.0.1:<port>`), which runs as a process with the aggregator
behind it on a private lane of topics: what the browser does must arrive as counted KPIs in PostgreSQL.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright
from prometheus_client.parser import text_string_to_metric_families

from kp.local import ServiceProcess
from kp.sitetokens import create_site_token
from tests.browser import ARGS, AXE, CHROMIUM, local_context, require_browser
from tests.integration.test_aggregator_exactly_once import Lane, lane
from tests.waiting import eventually

__all__ = ["lane"]

SITE_DIR = Path(__file__).resolve().parent / "demo_stadt"
CHROME_UA = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 "
             "Safari/537.36")
# Records every beacon and fetch the page makes, synchronously, before any of the page's scripts runs.
RECORD_SENDS = """
window.__sent = [];
const beacon = navigator.sendBeacon.bind(navigator), fetcher = window.fetch.bind(window);
navigator.sendBeacon = (url, body) => { window.__sent.push(String(url)); return beacon(url, body); };
window.fetch = (url, init) => { window.__sent.push(String(url)); return fetcher(url, init); };
"""

require_browser()


class DemoSite:
    """The demo city's web server: its pages with the ingest URL and site token filled in, under a strict CSP."""

    def __init__(self, ingest_url: str, token: str, form_service: str) -> None:
        self.ingest_url = ingest_url
        self.token = token
        self.form_service = form_service
        handler = partial(_Handler, site=self, directory=str(SITE_DIR))
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://localhost:{self.port}"

    @property
    def csp(self) -> str:
        return (f"default-src 'self'; script-src 'self' {self.ingest_url}; connect-src {self.ingest_url}; "
                "style-src 'self'; img-src 'self'; object-src 'none'; base-uri 'none'")


class _Handler(SimpleHTTPRequestHandler):
    def __init__(self, *args: Any, site: DemoSite, **kwargs: Any) -> None:
        self.site = site
        super().__init__(*args, **kwargs)

    def do_GET(self) -> None:
        if "." in self.path.rsplit("/", 1)[-1]:
            super().do_GET()
            return
        page = (SITE_DIR / "index.html").read_text().replace("{{INGEST}}", self.site.ingest_url)
        page = page.replace("{{TOKEN}}", self.site.token).replace("{{SERVICE}}", self.site.form_service)
        if self.path.startswith("/en/"):  # the English edition of the city's site
            page = page.replace('<html lang="de">', '<html lang="en">')
        data = page.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Security-Policy", self.site.csp)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def ingest(lane: Lane) -> Iterator[ServiceProcess]:
    sp = lane.stack.service("ingest", extra_env={
        "KP_USAGE_TOPIC": lane.usage_topic, "KP_REJECTED_TOPIC": lane.rejected_topic, "KP_LOG_LEVEL": "WARNING",
        "KP_EXTRA_MUNICIPALITIES": lane.ags, "KP_EXTRA_SERVICES": ",".join(lane.services)})
    sp.log_path = sp.log_path.with_name(f"ingest-{lane.unique}.log")
    agg = lane.aggregator(KP_LATE_HORIZON_DAYS="7")
    sp.start()
    agg.start()
    try:
        sp.wait_ready()
        agg.wait_ready()
        yield sp
    finally:
        sp.stop()
        agg.stop()


@pytest.fixture
async def site(lane: Lane, ingest: ServiceProcess, database_url: str) -> AsyncIterator[DemoSite]:
    demo = DemoSite(ingest.url, "", lane.services[1])
    token = await create_site_token(database_url, lane.ags, lane.services[0], [demo.url], 1000.0, 1000, "demo")
    demo.token = token.token
    demo.thread.start()
    try:
        yield demo
    finally:
        demo.server.shutdown()
        demo.server.server_close()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    # A visitor's browser: the user agent of an ordinary Chrome for every request, also for the beacons the
    # browser sends after a page is gone (a context's override does not reach those).
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                     args=[*ARGS, f"--user-agent={CHROME_UA}"])
        try:
            yield b
        finally:
            await b.close()


async def _context(browser: Browser, **options: Any) -> tuple[BrowserContext, Page, list[str]]:
    options.setdefault("user_agent", CHROME_UA)
    context, guard = await local_context(browser, locale="de-DE", viewport={"width": 1280, "height": 900},
                                         **options)
    context.guard = guard  # type: ignore[attr-defined]
    await context.add_init_script(RECORD_SENDS)
    page = await context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return context, page, errors


async def _kpis(db: asyncpg.Connection, ags: str, metric: str) -> dict[str, int]:
    rows = await db.fetch("""SELECT dimension, sum(value) AS v FROM kpi_values
                             WHERE municipality = $1 AND metric = $2 AND granularity = 'day' GROUP BY dimension""",
                          ags, metric)
    return {r["dimension"]: int(r["v"]) for r in rows}


async def _filtered(ingest: ServiceProcess, reason: str) -> float:
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"{ingest.url}/metrics")).text
    return sum(s.value for f in text_string_to_metric_families(text) if f.name == "kp_ingest_tracker_filtered"
               for s in f.samples if s.name.endswith("_total") and s.labels.get("reason") == reason)


async def _no_storage(context: BrowserContext, page: Page) -> None:
    assert await context.cookies() == []
    assert await page.evaluate("() => [localStorage.length, sessionStorage.length]") == [0, 0]
    assert await page.evaluate("async () => (await indexedDB.databases()).length") == 0
    assert await page.evaluate("() => document.cookie") == ""


class TestTracker:
    async def test_views_navigation_download_and_rating_arrive_as_kpis(
        self, browser: Browser, site: DemoSite, lane: Lane, db: asyncpg.Connection
    ) -> None:
        context, page, errors = await _context(browser)
        try:
            # arriving from a social network's link; the following views come from the site itself
            await page.goto(f"{site.url}/buergerservice?lang=de&name=geheim", referer="https://l.facebook.com/")
            await page.wait_for_selector("form.kp-feedback")
            await page.click("#stadtplan")  # the city's single-page navigation (history.pushState)
            await page.go_back()  # popstate: a view of the first page again
            async with page.expect_download():
                await page.click("#satzung")
            await page.get_by_label("4 Sterne").check()
            await page.get_by_label("Kommentar (optional)").fill("Schnell erledigt. Mail: a.b@example.de")
            await page.get_by_role("button", name="Bewertung senden").click()
            await page.get_by_role("status").filter(has_text="Vielen Dank").wait_for()
            sent = await page.evaluate("() => window.__sent")
            assert sent == [f"{site.ingest_url}/v1/collect"] * 5
            await _no_storage(context, page)
            context.guard.assert_local_only()  # type: ignore[attr-defined]
            assert errors == []  # no CSP violation, no script error
        finally:
            await context.close()

        expected = {"page_views": {"/buergerservice;lang=de": 2, "/stadtplan": 1, "/dokumente/satzung.pdf": 1},
                    "page_views_device": {"desktop": 4},
                    "page_views_referrer": {"social": 1, "internal": 3},
                    "feedback": {"4": 1}}
        for metric, counts in expected.items():
            await eventually(lambda m=metric: _kpis(db, lane.ags, m), lambda v, c=counts: v == c, timeout=60)

    async def test_an_opted_in_form_counts_start_steps_submit_and_abandonment(
        self, browser: Browser, site: DemoSite, lane: Lane, db: asyncpg.Connection
    ) -> None:
        context, page, errors = await _context(browser)
        try:
            await page.goto(f"{site.url}/antrag")
            await page.wait_for_selector("form.kp-feedback")
            await page.focus("#vorname")  # session started
            await page.click("#weiter1")
            await page.click("#weiter2")
            async with page.expect_navigation():
                await page.click("#absenden")  # submitted; the form's action loads /danke
            await page.goto(f"{site.url}/antrag")
            await page.focus("#vorname")
            await page.click("#weiter1")
            await page.goto(f"{site.url}/start")  # leaving the started form: abandoned after step 1
            assert errors == []
        finally:
            await context.close()
        expected = {"sessions_started": {"": 2}, "step_completed": {"1": 2, "2": 1}, "sessions_submitted": {"": 1},
                    "sessions_abandoned": {"": 1}, "abandoned_after_step": {"1": 1}}
        for metric, counts in expected.items():
            await eventually(lambda m=metric: _kpis(db, lane.ags, m), lambda v, c=counts: v == c, timeout=90)
        services = await db.fetch("SELECT DISTINCT service FROM kpi_values WHERE municipality = $1 AND metric = "
                                  "'sessions_started'", lane.ags)
        assert [r["service"] for r in services] == [lane.services[1]]  # the form's own LeiKa key

    @pytest.mark.parametrize("signal", ["doNotTrack", "globalPrivacyControl"])
    async def test_dnt_or_gpc_sends_nothing(self, browser: Browser, site: DemoSite, signal: str) -> None:
        context, page, _ = await _context(browser)
        value = "'1'" if signal == "doNotTrack" else "true"
        await context.add_init_script(
            f"Object.defineProperty(Navigator.prototype, '{signal}', {{get: () => {value}}});")
        try:
            await page.goto(f"{site.url}/start")
            await page.wait_for_selector("form.kp-feedback")  # both scripts have run
            await page.click("#stadtplan")
            async with page.expect_download():
                await page.click("#satzung")
            assert await page.evaluate("() => window.__sent") == []
            # the tracker returned before wrapping anything
            assert await page.evaluate("() => history.pushState.toString().includes('[native code]')")
            await _no_storage(context, page)
        finally:
            await context.close()

    async def test_headless_user_agent_is_filtered(self, browser: Browser, site: DemoSite,
                                                   ingest: ServiceProcess) -> None:
        context, page, _ = await _context(browser, user_agent=CHROME_UA.replace("Chrome/", "HeadlessChrome/"))
        try:
            await page.goto(f"{site.url}/start")
            await eventually(lambda: _filtered(ingest, "bot"), lambda n: n == 1)
        finally:
            await context.close()

    async def test_page_on_an_unbound_origin_is_refused(self, browser: Browser, site: DemoSite,
                                                        ingest: ServiceProcess) -> None:
        context, page, _ = await _context(browser)
        try:
            # The same page from 127.0.0.1 instead of localhost: another origin, which the token is not bound to.
            await page.goto(f"{site.url.replace('localhost', '127.0.0.1')}/start")
            await eventually(lambda: _filtered(ingest, "forbidden_origin"), lambda n: n == 1)
        finally:
            await context.close()


class TestFeedbackWidget:
    async def test_passes_axe_and_works_by_keyboard_alone(
        self, browser: Browser, site: DemoSite, lane: Lane, db: asyncpg.Connection
    ) -> None:
        # axe-core is injected by the test, so this context bypasses the demo page's CSP.
        context, page, _ = await _context(browser, bypass_csp=True)
        try:
            await page.goto(f"{site.url}/start")
            await page.wait_for_selector("form.kp-feedback")
            await page.add_script_tag(path=str(AXE))
            result = await page.evaluate("async () => (await axe.run('form.kp-feedback')).violations")
            assert [(v["id"], [n["target"] for n in v["nodes"]]) for v in result] == []
            first_star = page.locator("form.kp-feedback input[type=radio]").first
            for _ in range(10):  # Tab through the page's links to the first star
                await page.keyboard.press("Tab")
                if await first_star.evaluate("e => e === document.activeElement"):
                    break
            else:
                pytest.fail("the rating cannot be reached with Tab")
            await page.keyboard.press("Enter")  # submitting with no star says what is missing
            await page.get_by_role("status").filter(has_text="Bitte wählen").wait_for()
            await page.keyboard.press("ArrowRight")  # arrow keys move within the radio group and select
            assert await page.locator("form.kp-feedback input:checked").get_attribute("value") == "2"
            await page.keyboard.press("Tab")
            await page.keyboard.type("Ging gut.")
            await page.keyboard.press("Tab")
            await page.keyboard.press("Enter")
            await page.get_by_role("status").filter(has_text="Vielen Dank").wait_for()
        finally:
            await context.close()
        await eventually(lambda: _kpis(db, lane.ags, "feedback"), lambda v: v == {"2": 1}, timeout=60)

    async def test_english_by_lang(self, browser: Browser, site: DemoSite) -> None:
        context, page, _ = await _context(browser)
        try:
            await page.goto(f"{site.url}/en/start")
            await page.wait_for_selector("form.kp-feedback")
            assert await page.locator("form.kp-feedback legend").inner_text() == (
                "How satisfied are you with this online service?")
            assert await page.get_by_role("button", name="Send rating").count() == 1
        finally:
            await context.close()
