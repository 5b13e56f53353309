"""Whole system as processes: freshness (ingest accept -> KPI visible) at a fixed offered load, RSS per service.

The load generator runs as its own process (`bench.load`) at a fixed offered rate with realistic traffic.
Spread over the run it sends marker events, each alone in its own past hour bucket of one
municipality x service pair; this process polls `kpi_values` for those hour rows and takes the time a row
first becomes visible minus the time ingest acknowledged the marker (both wall clocks of this machine).
Same-run baseline: the same measurement with a trickle of load (20 events/s). RSS is read from /proc.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from bench.harness import bench_stack
from bench.load import create_api_key
from bench.probes import aggregator_lag, rss_mib
from kp.local import LocalStack, ServiceProcess

ROOT = Path(__file__).resolve().parent.parent
MARKER_PAIR = ("06631009", "99115005104000")  # Fulda, Wohnsitz Anmeldung
FRESHNESS_P99_TARGET_MS = 5000.0
RSS_TARGET_MIB = 512.0  # the services' memory limit in docker-compose.yml
OPTIONAL_SERVICES = ("publisher", "workflow")


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))]


def start_system(stack: LocalStack) -> dict[str, ServiceProcess]:
    """Ingest and aggregator are required; publisher and workflow join if they come up (for their RSS)."""
    procs: dict[str, ServiceProcess] = {}
    for name in ("ingest", "aggregator", *OPTIONAL_SERVICES):
        sp = stack.service(name)
        sp.start()
        procs[name] = sp
    for name, sp in list(procs.items()):
        try:
            sp.wait_ready(timeout=60)
        except Exception:
            if name not in OPTIONAL_SERVICES:
                raise
            sp.stop()
            del procs[name]
    return procs


async def watch_markers(database_url: str, since: datetime, stop: asyncio.Event) -> dict[str, float]:
    """Poll the marker pair's hour rows every 20 ms; return first-seen wall time per period (ISO hour, UTC)."""
    seen: dict[str, float] = {}
    conn = await asyncpg.connect(database_url)
    try:
        while not stop.is_set():
            rows = await conn.fetch(
                """SELECT period_start FROM kpi_values
                   WHERE granularity = 'hour' AND municipality = $1 AND service = $2
                     AND metric = 'sessions_started' AND period_start < $3""",
                MARKER_PAIR[0], MARKER_PAIR[1], since,
            )
            now = time.time()
            for r in rows:
                seen.setdefault(r["period_start"].astimezone(UTC).strftime("%Y-%m-%dT%H"), now)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.02)
    finally:
        await conn.close()
    return seen


async def sample(stack: LocalStack, procs: dict[str, ServiceProcess], stop: asyncio.Event,
                 peaks: dict[str, float]) -> None:
    """Every half second: RSS per service and the aggregator's lag; the maxima go into `peaks`."""
    assert stack.database_url
    assert stack.kafka_bootstrap
    while not stop.is_set():
        for name, sp in procs.items():
            if sp.proc is not None and (v := rss_mib(sp.proc.pid)) is not None:
                peaks[name] = max(peaks.get(name, 0.0), v)
        lag = await aggregator_lag(stack.kafka_bootstrap, stack.database_url)
        peaks["lag"] = max(peaks.get("lag", 0), lag)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=0.5)


def run_load(ingest_url: str, api_key: str | None, rate: float, seconds: float, markers: int, base: datetime,
             seed: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "load.json"
        cmd = [sys.executable, "-m", "bench.load", "--url", ingest_url, "--rate", str(rate),
               "--seconds", str(seconds), "--markers", str(markers), "--marker-pair", ":".join(MARKER_PAIR),
               "--marker-base", base.isoformat(), "--seed", str(seed), "--out", str(out)]
        env = dict(os.environ, KP_BENCH_API_KEY=api_key or "")
        subprocess.run(cmd, cwd=ROOT, env=env, check=False, timeout=seconds + 120)
        result: dict[str, Any] = json.loads(out.read_text())
        return result


async def phase(stack: LocalStack, procs: dict[str, ServiceProcess], api_key: str | None, rate: float,
                seconds: float, markers: int, base: datetime, seed: int,
                peaks: dict[str, float]) -> tuple[list[float], dict[str, Any]]:
    """One load run with markers; return the markers' freshness in ms and the load summary."""
    assert stack.database_url
    stop = asyncio.Event()
    # Marker hours lie at least three hours before `base`; simulator traffic stays within the last two.
    watcher = asyncio.create_task(watch_markers(stack.database_url, base - timedelta(hours=2), stop))
    sampler = asyncio.create_task(sample(stack, procs, stop, peaks))
    summary = await asyncio.to_thread(run_load, procs["ingest"].url, api_key, rate, seconds, markers, base, seed)
    wanted = {m["period"] for m in summary["markers"]}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if await _all_visible(stack.database_url, wanted):
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.1)  # one more poll of the watcher
    stop.set()
    seen = await watcher
    await sampler
    fresh = [(seen[m["period"]] - m["accepted_at"]) * 1000 for m in summary["markers"] if m["period"] in seen]
    summary["markers_missing"] = len(wanted - set(seen))
    summary["freshness_ms_in_order"] = [round(f) for f in fresh]
    summary["max_lag"] = peaks.pop("lag", None)
    return fresh, summary


async def _all_visible(database_url: str, periods: set[str]) -> bool:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            """SELECT period_start FROM kpi_values WHERE granularity = 'hour' AND municipality = $1
               AND service = $2 AND metric = 'sessions_started'""", MARKER_PAIR[0], MARKER_PAIR[1])
    finally:
        await conn.close()
    have = {r["period_start"].astimezone(UTC).strftime("%Y-%m-%dT%H") for r in rows}
    return periods <= have


def rows_for(rate: float, seconds: float, idle: list[float], loaded: list[float], summary: dict[str, Any],
             rss_start: dict[str, float], rss_end: dict[str, float], peaks: dict[str, float]) -> list[dict[str, Any]]:
    p50, p99 = percentile(loaded, 0.5), percentile(loaded, 0.99)
    b50, b99 = percentile(idle, 0.5), percentile(idle, 0.99)
    offered = f"{rate:.0f} ev/s offered"
    rows: list[dict[str, Any]] = [
        {"measure": f"freshness p50, ingest accept -> KPI visible ({offered})", "value": p50, "unit": "ms",
         "baseline": "trickle 20 ev/s", "baseline_value": b50, "target": None, "met": None,
         "samples": len(loaded)},
        {"measure": f"freshness p99, ingest accept -> KPI visible ({offered})", "value": p99, "unit": "ms",
         "baseline": "trickle 20 ev/s", "baseline_value": b99, "target": f"<= {FRESHNESS_P99_TARGET_MS:.0f} ms",
         "met": p99 is not None and p99 <= FRESHNESS_P99_TARGET_MS and summary["markers_missing"] == 0,
         "samples": len(loaded), "markers_missing": summary["markers_missing"]},
        {"measure": "accepted rate under fixed offered load", "value": summary["accepted_per_s"], "unit": "ev/s",
         "baseline": "offered", "baseline_value": rate, "target": ">= 0.95x offered",
         "met": (summary["accepted_per_s"] or 0) >= 0.95 * rate,
         "load": {k: v for k, v in summary.items() if k not in ("markers", "accepted_by_pair")}},
    ]
    rows[0]["freshness_ms_in_order"] = summary.get("freshness_ms_in_order")
    rows.append({"measure": f"aggregator lag, max during load ({offered})", "value": summary.get("max_lag"),
                 "unit": "records", "baseline": None, "baseline_value": None, "target": None, "met": None})
    for name in sorted(rss_end):
        rows.append({
            "measure": f"RSS {name} after {seconds:.0f}s of load", "value": rss_end[name], "unit": "MiB",
            "baseline": "same process at start", "baseline_value": rss_start.get(name),
            "target": f"< {RSS_TARGET_MIB:.0f} MiB", "met": rss_end[name] < RSS_TARGET_MIB,
            "peak_mib": peaks.get(name),
        })
    return rows


async def measure(stack: LocalStack, quick: bool) -> list[dict[str, Any]]:
    assert stack.database_url
    procs = start_system(stack)
    try:
        api_key = await create_api_key(stack.database_url, platform="kp-bench-system")
        rss_start = {n: v for n, sp in procs.items() if sp.proc and (v := rss_mib(sp.proc.pid)) is not None}
        peaks: dict[str, float] = {}
        now = datetime.now(UTC)
        # Warm-up (discarded): the aggregator's consumer group has joined once a marker shows up.
        await phase(stack, procs, api_key, 20.0, 1.0, 1, now - timedelta(hours=100), 5, peaks)
        idle, _ = await phase(stack, procs, api_key, 20.0, 4.0 if quick else 10.0, 4 if quick else 10,
                              now, 7, peaks)
        rate, seconds = (400.0, 20.0) if quick else (1000.0, 90.0)
        markers = 20 if quick else 60
        loaded, summary = await phase(stack, procs, api_key, rate, seconds, markers, now - timedelta(hours=12),
                                      11, peaks)
        rss_end = {n: v for n, sp in procs.items() if sp.proc and (v := rss_mib(sp.proc.pid)) is not None}
        return rows_for(rate, seconds, idle, loaded, summary, rss_start, rss_end, peaks)
    finally:
        for sp in procs.values():
            sp.stop()


def run(quick: bool) -> list[dict[str, Any]]:
    """Entry point of the harness; uses KP_KAFKA_BOOTSTRAP / KP_DATABASE_URL or starts its own stack."""
    with bench_stack("system") as stack:
        return asyncio.run(measure(stack, quick))


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(json.dumps(row, default=str))
