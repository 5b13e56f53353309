"""The first hour of a new user: `make run` and the test infrastructure from a private (0700) folder, as
root or not; the detached stack with demo history, URLs and traffic; the dashboard spanning the history.

The checkout is copied into a `mktemp -d` folder (mode 0700, like root's home). As root, PostgreSQL runs as
the `postgres` user, who cannot enter that folder: the stack must still start (its cluster lives elsewhere).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import pytest

from kp.demo import HISTORY_DAYS
from kp.stack import PostgresNode
from tests.browser import launch, local_context, require_browser
from tests.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]
OFFENBACH, WOHNSITZ = "06413000", "99115005104000"


def _env() -> dict[str, str]:
    drop = ("KP_KAFKA_BOOTSTRAP", "KP_DATABASE_URL", "KP_RUN_DIR", "PYTHONPATH")
    return {k: v for k, v in os.environ.items() if k not in drop}


def _kp(checkout: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    # `-c` puts the working directory first on sys.path: the copy's code runs, not this checkout's.
    return subprocess.run([sys.executable, "-c", "from kp.cli import app; app()", *args], cwd=checkout,
                          env=_env(), capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def private_checkout() -> Iterator[Path]:
    """The tracked files of this checkout in a fresh 0700 folder."""
    tmp = Path(tempfile.mkdtemp(prefix="kp-first-hour-"))
    assert tmp.stat().st_mode & 0o777 == 0o700
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=False)
    if listed.returncode == 0:
        for name in filter(None, listed.stdout.decode().split("\0")):
            src, dst = ROOT / name, tmp / name
            if src.is_file():
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
    else:  # a source tree without git (e.g. an unpacked release)
        shutil.copytree(ROOT, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns(
            ".git", ".venv", ".run", "node_modules", "test-artifacts", "__pycache__"))
    try:
        yield tmp
    finally:
        was_up = (tmp / ".run" / "stack.json").exists()
        down = _kp(tmp, "stack", "down", timeout=120)
        PostgresNode(tmp / ".run" / "postgres").remove()
        for run in (tmp / ".run").glob("test-*"):
            PostgresNode(run / "postgres").remove()
        shutil.rmtree(tmp, ignore_errors=True)
    if was_up:  # a detached stack's demo traffic ends with it
        assert "simulator" in down.stdout, down.stdout + down.stderr


@pytest.fixture(scope="module")
def detached(private_checkout: Path) -> dict[str, Any]:
    """`kp stack up --detach` (what `make run` runs, in the background) from the private folder."""
    up = _kp(private_checkout, "stack", "up", "--detach", "--rate", "20", "--seed", "5")
    assert up.returncode == 0, up.stdout + up.stderr
    urls = dict(re.findall(r"^  (\S[^\n]*?)\s{2,}(http://127\.0\.0\.1:\d+\S*)$", up.stdout, flags=re.M))
    return {"out": up.stdout, "urls": urls}


@pytest.mark.timeout(900)  # the first start loads 13 months of demo history
class TestPrivateFolder:
    def test_stack_starts_prints_every_url_and_runs_demo_traffic(self, private_checkout: Path,
                                                                 detached: dict[str, Any]) -> None:
        urls = detached["urls"]
        for label in ("Dashboard", "Datenportal", "DCAT-AP.de catalog", "CKAN API", "Sachbearbeitung (clerk view)"):
            assert label in urls, detached["out"]
        publisher = urls["Dashboard"].removesuffix("/dashboard")
        assert httpx.get(urls["Dashboard"], timeout=30).status_code == 200
        # the publisher knows its own address: the catalog's IRIs use the port it actually listens on
        catalog = httpx.get(f"{publisher}/catalog.ttl", timeout=30).text
        assert f"<{publisher}/catalog" in catalog
        status = _kp(private_checkout, "stack", "status", timeout=60)
        assert status.returncode == 0, status.stderr
        assert re.search(r"^simulator\s+pid \d+\s+running$", status.stdout, flags=re.M), status.stdout
        # `kp simulate` finds the running stack's ingest and demo key without being told
        sim = _kp(private_checkout, "simulate", "--duration", "2", "--rate", "100", "--seed", "9", timeout=120)
        assert sim.returncode == 0, sim.stdout + sim.stderr
        accepted = re.search(r"accepted (\d+) events", sim.stdout)
        assert accepted is not None
        assert int(accepted.group(1)) > 0
        if os.geteuid() == 0:  # the cluster lives where the server's user can reach it, not in the 0700 folder
            node = PostgresNode(private_checkout / ".run" / "postgres")
            assert node.home != node.root
            assert (node.home / "data" / "PG_VERSION").exists()

    async def test_dashboard_time_series_spans_the_demo_history(self, detached: dict[str, Any]) -> None:
        require_browser()
        publisher = detached["urls"]["Dashboard"].removesuffix("/dashboard")
        today = datetime.now(UTC).astimezone(ZoneInfo("Europe/Berlin")).date()
        first = today - timedelta(days=HISTORY_DAYS)
        url = (f"{publisher}/dashboard/{OFFENBACH}?service={WOHNSITZ}&period=month&from={first.isoformat()}"
               f"&to={today.isoformat()}")
        async with launch() as browser:
            context, guard = await local_context(browser, locale="de-DE", viewport={"width": 1280, "height": 900})
            page = await context.new_page()

            async def usage() -> dict[str, Any]:
                await page.goto(url)
                data: dict[str, Any] = await page.evaluate(
                    "JSON.parse(document.getElementById('nutzung-data').textContent)")
                return data

            def spans_history(d: dict[str, Any]) -> bool:
                started = d["datasets"][0]["data"]
                return bool(started) and started[0] is not None and started[0] > 0 and started[-2] is not None

            data = await eventually(usage, spans_history, timeout=300, interval=2)
            assert data["labels"][0] == f"{first.month:02d}/{first.year}"
            assert data["labels"][-1] == f"{today.month:02d}/{today.year}"
            assert len(data["labels"]) >= 13
            assert all(v is not None and v > 0 for v in data["datasets"][0]["data"][:-1])
            canvas = page.locator("#nutzung-canvas")
            assert await canvas.is_visible()
            await context.close()
        guard.assert_local_only()

    async def test_demo_cases_wait_at_clerk_tasks_and_one_filing_is_parked_per_city(
        self, private_checkout: Path, detached: dict[str, Any]
    ) -> None:
        state = json.loads((private_checkout / ".run" / "stack.json").read_text())
        conn = await asyncpg.connect(state["database_url"])
        try:
            async def states() -> dict[str, int]:
                rows = await conn.fetch("SELECT state, count(*) AS n FROM wf_cases GROUP BY state UNION ALL "
                                        "SELECT 'parked_cities', count(DISTINCT municipality) FROM wf_cases "
                                        "WHERE state = 'parked'")
                return {r["state"]: r["n"] for r in rows}

            # the demo E-Akte refuses one case's unreadable scan per city; five attempts with backoff, then parked
            found = await eventually(states, lambda s: s.get("parked_cities", 0) == 6, timeout=240, interval=2)
            assert found.get("task", 0) > 0  # the clerk view has work
            assert found.get("closed", 0) > 0
            assert found.get("waiting", 0) > 0
            parked = await conn.fetch("SELECT DISTINCT municipality, current_step, last_error FROM wf_cases "
                                      "WHERE state = 'parked'")
        finally:
            await conn.close()
        assert {r["current_step"] for r in parked} == {"akte"}
        assert len({r["municipality"] for r in parked}) == 6
        assert all("422" in r["last_error"] for r in parked)

    def test_test_infrastructure_starts_from_the_private_folder(self, private_checkout: Path) -> None:
        # The same provisioning `make test` uses (own broker and cluster), with one integration test file.
        env = _env()
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
             "tests/integration/test_publisher_api_reference.py"],
            cwd=private_checkout, env=env, capture_output=True, text=True, timeout=900, check=False,
        )
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
        assert re.search(r"\d+ passed", result.stdout)
