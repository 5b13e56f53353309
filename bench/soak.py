"""Soak: `python -m bench.soak --minutes 10` runs the whole system at a steady simulated rate, then checks it.

Starts its own Kafka, PostgreSQL and the four services (under `.run/soak-<pid>`), drives the load generator
process at a fixed rate for the given time, samples RSS per service and the aggregator's lag, drains, and
prints: RSS at start and end, lag after the drain (must be 0), error counts, and the exact-count check
(events accepted by ingest == events counted in the KPIs). Exit status 1 if a check fails. Not part of CI.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.load import create_api_key
from bench.probes import aggregator_lag, counted, end_offsets, rss_mib
from kp.local import LocalStack
from shared.kafka import USAGE_REJECTED

ROOT = Path(__file__).resolve().parent.parent


def rss_all(stack: LocalStack) -> dict[str, float]:
    return {n: round(v, 1) for n, sp in stack.services.items()
            if sp.proc is not None and (v := rss_mib(sp.proc.pid)) is not None}


def error_lines(log: Path) -> int:
    """Log records at ERROR or above (the services log JSON lines)."""
    if not log.exists():
        return 0
    return sum(1 for line in log.read_text(errors="replace").splitlines()
               if '"level": "ERROR"' in line or '"level": "CRITICAL"' in line)


async def soak(stack: LocalStack, minutes: float, rate: float, seed: int) -> dict[str, Any]:
    assert stack.database_url
    assert stack.kafka_bootstrap
    api_key = await create_api_key(stack.database_url, platform="kp-soak")
    rss_start = rss_all(stack)
    rejected_before = sum((await end_offsets(stack.kafka_bootstrap, USAGE_REJECTED.name)).values())
    out = stack.run_dir / "load.json"
    seconds = minutes * 60
    cmd = [sys.executable, "-m", "bench.load", "--url", stack.services["ingest"].url, "--rate", str(rate),
           "--seconds", str(seconds), "--seed", str(seed), "--out", str(out)]
    proc = await asyncio.create_subprocess_exec(*cmd, cwd=ROOT, env=dict(os.environ, KP_BENCH_API_KEY=api_key or ""))
    started = time.monotonic()
    peak: dict[str, float] = {}
    max_lag = 0
    while proc.returncode is None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), timeout=5)
        now = rss_all(stack)
        for k, v in now.items():
            peak[k] = max(peak.get(k, 0.0), v)
        lag = await aggregator_lag(stack.kafka_bootstrap, stack.database_url)
        max_lag = max(max_lag, lag)
        print(f"  t={time.monotonic() - started:5.0f}s lag={lag:6d} rss={now}", flush=True)
    load: dict[str, Any] = json.loads(out.read_text())

    drain_started = time.monotonic()
    lag = await aggregator_lag(stack.kafka_bootstrap, stack.database_url)
    while lag and time.monotonic() - drain_started < 180:
        await asyncio.sleep(0.5)
        lag = await aggregator_lag(stack.kafka_bootstrap, stack.database_url)
    drain_s = time.monotonic() - drain_started
    kpi_count = await counted(stack.database_url)
    rejected_after = sum((await end_offsets(stack.kafka_bootstrap, USAGE_REJECTED.name)).values())
    logs = stack.run_dir / "logs"
    non_200 = {k: v for k, v in load["statuses"].items() if k != "200"}
    return {
        "minutes": minutes, "offered_rate": rate, "seed": seed,
        "sent_events": load["sent_events"], "accepted": load["accepted"], "accepted_per_s": load["accepted_per_s"],
        "duplicate_resends": load["duplicate_resends"], "kpi_counted": kpi_count,
        "exact": kpi_count == load["accepted"] and load["rejected"] == 0 and load["gave_up_batches"] == 0,
        "lag_after_drain": lag, "drain_seconds": round(drain_s, 1), "max_lag": max_lag,
        "rss_start_mib": rss_start, "rss_end_mib": rss_all(stack), "rss_peak_mib": peak,
        "errors": {"http_non_200": non_200, "client_rejected": load["rejected"], "gave_up_batches":
                   load["gave_up_batches"], "retries": load["retries"],
                   "rejected_topic_records": rejected_after - rejected_before,
                   "service_error_log_lines": {n: error_lines(logs / f"{n}.log") for n in stack.services}},
        "request_ms_p50": load["request_ms_p50"], "request_ms_p99": load["request_ms_p99"],
    }


def report(s: dict[str, Any]) -> str:
    lines = [f"soak: {s['minutes']:g} min at {s['offered_rate']:g} ev/s offered (seed {s['seed']})",
             f"  accepted {s['accepted']:,} of {s['sent_events']:,} sent ({s['accepted_per_s']:.1f} ev/s), "
             f"{s['duplicate_resends']:,} events re-sent as duplicates",
             f"  KPI-counted events {s['kpi_counted']:,}  exact: {'yes' if s['exact'] else 'NO'}",
             f"  lag after drain {s['lag_after_drain']} (drained in {s['drain_seconds']}s; max during run "
             f"{s['max_lag']})",
             f"  request latency p50 {s['request_ms_p50']:.1f} ms, p99 {s['request_ms_p99']:.1f} ms",
             "  RSS MiB (start -> end, peak):"]
    for name in s["rss_start_mib"]:
        lines.append(f"    {name:<10} {s['rss_start_mib'][name]:7.1f} -> {s['rss_end_mib'].get(name, 0):7.1f}"
                     f"  (peak {s['rss_peak_mib'].get(name, 0):.1f})")
    lines.append(f"  errors: {json.dumps(s['errors'])}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--rate", type=float, default=200.0, help="offered events per second")
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args(argv)
    run_dir = ROOT / ".run" / f"soak-{os.getpid()}"
    # A stack of its own: the exact-count check covers every event in this database.
    stack = LocalStack(run_dir=run_dir)
    try:
        print(f"starting the stack under {run_dir.relative_to(ROOT)} ...", flush=True)
        stack.start_infra()
        stack.start_services()
        summary = asyncio.run(soak(stack, a.minutes, a.rate, a.seed))
    finally:
        if os.environ.get("KP_BENCH_KEEP"):
            stack.stop()
        else:
            stack.purge()  # the run folder and the cluster (outside it as root)
    print(report(summary))
    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"soak-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(summary, indent=2))
    print(f"results: {path.relative_to(ROOT)}")
    return 0 if summary["exact"] and summary["lag_after_drain"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
