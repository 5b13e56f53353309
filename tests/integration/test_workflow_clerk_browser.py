"""The clerk view in Debian's Chromium (headless, Playwright) with the real Keycloak of the local stack.

A Gießen clerk logs in through Keycloak (Authorization Code + PKCE), sees only Gießen's tasks, claims and
decides one and logs out; pages pass axe-core and fit a 390 px screen. Every test checks that the browser
sent no request off this machine. Keycloak starts once per session (it takes a minute or more) and only when
this module runs.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.async_api import Browser, Page

from kp.keycloak import KeycloakNode, demo_users
from kp.local import LocalStack, ServiceProcess
from tests.browser import ARTIFACTS, AXE, assert_only_local_hosts, require_browser
from tests.integration.test_workflow_support import WfEnv, case_of, submitted, wf_env
from tests.waiting import eventually

__all__ = ["wf_env"]

ROOT = Path(__file__).resolve().parents[2]
# `KP_SCREENSHOT_DIR=docs/screenshots` refreshes the screenshots of the docs; by default they go to the artefacts.
SCREENSHOTS = ROOT / os.environ["KP_SCREENSHOT_DIR"] if os.environ.get("KP_SCREENSHOT_DIR") else ARTIFACTS
GIESSEN, MARBURG = "06531005", "06534014"
HUNDESTEUER = "99102013104000"
GEWERBE = "99050012104000"

require_browser()


@pytest.fixture(scope="session")
def keycloak(stack: LocalStack) -> Iterator[KeycloakNode]:
    node = KeycloakNode(stack.run_dir / "keycloak")
    node.start()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="module")
def workflow(stack: LocalStack, keycloak: KeycloakNode, wf_env: WfEnv) -> Iterator[ServiceProcess]:
    with stack.running("workflow", {**wf_env.env(), **keycloak.workflow_env(), "KP_ENVIRONMENT": "dev"}) as sp:
        yield sp



class Visit:
    """A browser context that records every request's host and every failed response."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.hosts: set[str] = set()
        self.errors: list[str] = []
        page.on("request", lambda r: self.hosts.add(urlsplit(r.url).hostname or r.url))
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on("response", lambda r: self.errors.append(f"{r.status} {r.url}") if r.status >= 500 else None)

    def assert_stayed_local(self) -> None:
        assert_only_local_hosts(self.hosts)
        assert self.errors == []


@pytest.fixture
async def visit(browser: Browser) -> AsyncIterator[Visit]:
    # The pages forbid inline scripts (CSP); the test injects axe-core, so it bypasses the policy.
    context = await browser.new_context(locale="de-DE", timezone_id="Europe/Berlin", bypass_csp=True,
                                        viewport={"width": 1280, "height": 900})
    v = Visit(await context.new_page())
    try:
        yield v
    finally:
        await context.close()
    v.assert_stayed_local()


async def _axe(page: Page) -> list[dict[str, Any]]:
    await page.add_script_tag(path=str(AXE))
    result = await page.evaluate("async () => (await axe.run(document)).violations")
    return [{"id": v["id"], "nodes": [n["target"] for n in v["nodes"]]} for v in result]


async def _login(page: Page, base: str, username: str, password: str) -> None:
    await page.goto(f"{base}/sachbearbeitung")
    await page.get_by_role("link", name="Anmelden").click()
    await page.fill("#username", username)
    await page.fill("#password", password)
    await page.click("#kc-login")
    await page.wait_for_url(re.compile(r".*/sachbearbeitung(\?.*)?$"))


async def _seed(env: WfEnv, events: list[dict[str, Any]]) -> None:
    await env.publish(*events)
    for e in events:
        await eventually(lambda e=e: case_of(env.database_url, e["application_id"]),  # type: ignore[misc]
                         lambda c: c is not None and c["state"] in ("task", "waiting"), timeout=60)


class TestClerkLogin:
    async def test_giessen_clerk_logs_in_sees_only_giessen_claims_decides_and_logs_out(
        self, visit: Visit, workflow: ServiceProcess, wf_env: WfEnv
    ) -> None:
        giessen = [submitted(GIESSEN, HUNDESTEUER, []) for _ in range(2)]
        marburg = submitted(MARBURG, HUNDESTEUER, [])
        await _seed(wf_env, [*giessen, marburg])
        clerk = next(u for u in demo_users() if u.username == "sb.giessen")
        page = visit.page

        await _login(page, workflow.url, clerk.username, clerk.password)
        body = await page.inner_text("main")
        assert f"Angemeldet: {clerk.name}" in await page.inner_text("header")
        for e in giessen:
            assert e["application_id"] in body
        assert marburg["application_id"] not in body
        assert "Marburg" not in body
        cookie = next(c for c in await page.context.cookies() if c["name"] == "kp_session")
        assert cookie["httpOnly"]
        assert cookie["sameSite"] == "Lax"

        target = giessen[0]["application_id"]
        row = page.locator("tr", has_text=target)
        await row.get_by_role("button", name=re.compile("Übernehmen")).click()
        await page.wait_for_url(re.compile(r".*hinweis=uebernommen"))
        assert "von Ihnen übernommen" in await page.locator("tr", has_text=target).inner_text()
        await page.locator("tr", has_text=target).get_by_role("link").first.click()
        await page.get_by_label("Genehmigen").check()
        await page.get_by_label("Begründung (optional)").fill("Unterlagen vollständig")
        await page.get_by_role("button", name="Entscheidung speichern").click()
        await page.wait_for_url(re.compile(r".*hinweis=erledigt"))
        assert "Ihre Entscheidung ist gespeichert." in await page.inner_text("main")
        assert target not in await page.inner_text("main")

        async def decided() -> dict[str, Any] | None:
            return await case_of(wf_env.database_url, target)

        case = await eventually(decided, lambda c: c is not None and c["context"].get("decision") == "approved")
        assert case is not None

        await page.get_by_role("button", name="Abmelden").click()
        await page.wait_for_url(re.compile(r".*/sachbearbeitung/abgemeldet$"))
        assert "Sie sind abgemeldet" in await page.inner_text("main")
        assert await _axe(page) == []
        assert not [c for c in await page.context.cookies() if c["name"] == "kp_session"]
        await page.goto(f"{workflow.url}/sachbearbeitung")
        assert "Anmeldung" in await page.inner_text("h1")
        assert await _axe(page) == []
        await page.get_by_role("link", name="Anmelden").click()
        await page.wait_for_selector("#username")  # Keycloak asks again: the logout reached the provider too

    async def test_api_bearer_token_from_keycloak_still_works(self, keycloak: KeycloakNode,
                                                              workflow: ServiceProcess, wf_env: WfEnv) -> None:
        marburg, giessen = submitted(MARBURG, HUNDESTEUER, []), submitted(GIESSEN, HUNDESTEUER, [])
        await _seed(wf_env, [marburg, giessen])
        clerk = next(u for u in demo_users() if u.username == "sb.marburg")
        async with httpx.AsyncClient(timeout=30) as client:
            token = (await client.post(f"{keycloak.issuer}/protocol/openid-connect/token", data={
                "grant_type": "password", "client_id": "kommunal-pulse-cli", "username": clerk.username,
                "password": clerk.password, "scope": "openid"})).json()["access_token"]
            tasks = await client.get(f"{workflow.url}/v1/tasks", headers={"Authorization": f"Bearer {token}"})
        assert tasks.status_code == 200
        assert marburg["application_id"] in {t["application_id"] for t in tasks.json()}
        assert {t["municipality"] for t in tasks.json()} == {MARBURG}


class TestClerkPages:
    async def test_accessible_at_1280_and_390_px_with_screenshots(self, visit: Visit, browser: Browser,
                                                                 workflow: ServiceProcess, wf_env: WfEnv) -> None:
        events = [submitted(GIESSEN, HUNDESTEUER, []), submitted(GIESSEN, HUNDESTEUER, []),
                  submitted(GIESSEN, "99115005104000", []),
                  submitted(GIESSEN, "99012070006001", ["lageplan", "bauzeichnungen", "baubeschreibung",
                                                        "standsicherheitsnachweis"])]
        await _seed(wf_env, events)
        clerk = next(u for u in demo_users() if u.username == "leitung.giessen")
        page = visit.page
        await _login(page, workflow.url, clerk.username, clerk.password)
        await page.locator("tr", has_text=events[0]["application_id"]).get_by_role("button").click()
        await page.wait_for_url(re.compile(r".*hinweis=uebernommen"))
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        assert await _axe(page) == []
        await page.screenshot(path=str(SCREENSHOTS / "clerk-tasks-1280.png"), full_page=True)
        await page.locator("tr", has_text=events[3]["application_id"]).get_by_role("link").first.click()
        await page.wait_for_url(re.compile(r".*/vorgaenge/.*"))
        assert "Genehmigungsfiktion" in await page.inner_text("main")
        assert await _axe(page) == []
        await page.screenshot(path=str(SCREENSHOTS / "clerk-case-1280.png"), full_page=True)

        await page.set_viewport_size({"width": 390, "height": 844})
        pages = ((page.url, "clerk-case-390.png"), (f"{workflow.url}/sachbearbeitung", "clerk-tasks-390.png"))
        for path, name in pages:
            await page.goto(path)
            assert await page.evaluate("document.documentElement.scrollWidth") <= 390
            assert await _axe(page) == []
            await page.screenshot(path=str(SCREENSHOTS / name), full_page=True)
