"""Screenshots of dashboard and portal at 1280 and 390 px into docs/screenshots (run against `kp stack up`)."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from playwright.async_api import async_playwright

from kp import local
from kp.cli import RUN_DIR

ROOT = Path(__file__).resolve().parent.parent
PAGES = {"dashboard": "/dashboard/06413000?period=month", "portal": "/portal"}
WIDTHS = ((1280, 900), (390, 844))


async def shoot(base: str, target: Path) -> list[Path]:
    """One PNG per page and width; the page's own requests only (the browser has no network besides the host)."""
    written: list[Path] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                           args=["--no-sandbox", "--disable-gpu"])
        try:
            for page_name, path in PAGES.items():
                for width, height in WIDTHS:
                    context = await browser.new_context(locale="de-DE", viewport={"width": width, "height": height})
                    page = await context.new_page()
                    await page.goto(base + path, wait_until="networkidle")
                    await page.evaluate("document.fonts.ready")
                    out = target / f"{page_name}-{width}.png"
                    if width < 600:  # phones: the first chart too, not only the filter form
                        await page.set_viewport_size({"width": width, "height": 1600})
                    await page.screenshot(path=str(out), full_page=False)
                    written.append(out)
                    await context.close()
        finally:
            await browser.close()
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--publisher", help="publisher base URL (default: the running stack's)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = parser.parse_args()
    base = args.publisher or local.service_url(local.read_state(RUN_DIR) or {}, "publisher")
    if not base:
        raise SystemExit("no running stack: start one with `kp stack up --detach` or pass --publisher")
    args.out.mkdir(parents=True, exist_ok=True)
    for path in asyncio.run(shoot(base.rstrip("/"), args.out)):
        print(path.relative_to(ROOT))  # noqa: T201


if __name__ == "__main__":
    main()
