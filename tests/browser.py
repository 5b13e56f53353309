"""Headless Debian Chromium driven by Playwright, and axe-core from the project's npm packages."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.async_api import Browser, BrowserContext, Request, async_playwright

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
ARTIFACTS = ROOT / "test-artifacts"
# No background connections: this machine's network is closed, and a test must not depend on one.
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run"]


def require_browser() -> None:
    """Skip the calling test module, visibly, when Chromium or axe-core is not installed."""
    if not CHROMIUM.exists():  # pragma: no cover - depends on the machine
        pytest.skip(f"{CHROMIUM} not installed (scripts/setup-system.sh installs Debian's chromium)",
                    allow_module_level=True)
    if not AXE.exists():  # pragma: no cover
        pytest.skip(f"{AXE} missing: run `npm install` (root package.json)", allow_module_level=True)


@asynccontextmanager
async def launch() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        try:
            yield browser
        finally:
            await browser.close()


LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
"""Hosts a page of the product may request: this machine only."""


def assert_only_local_hosts(hosts: set[str]) -> None:
    """Every request a browser test made went to this machine (pages must work offline, with no trackers)."""
    assert hosts, "the browser sent no request at all"
    assert hosts <= LOCAL_HOSTS, f"requests left the host: {sorted(hosts - LOCAL_HOSTS)}"



class HostGuard:
    """Records every request of a browser context that goes to another host than this machine."""

    def __init__(self) -> None:
        self.foreign: list[str] = []

    def _seen(self, request: Request) -> None:
        parts = urlsplit(request.url)
        if parts.scheme in ("data", "blob", "about"):
            return
        if parts.hostname not in LOCAL_HOSTS:
            self.foreign.append(request.url)

    def assert_local_only(self) -> None:
        assert self.foreign == [], f"requests left the host: {self.foreign}"


async def local_context(browser: Browser, **options: Any) -> tuple[BrowserContext, HostGuard]:
    """A new browser context whose requests to other hosts are recorded in the returned guard."""
    context = await browser.new_context(**options)
    guard = HostGuard()
    context.on("request", guard._seen)
    return context, guard
