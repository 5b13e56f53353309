"""Ingest throughput: events/s through HTTP batch ingest vs a raw aiokafka producer sending the same bytes,
and the public tracker endpoint (one hit per request, as browsers send them) next to HTTP batch ingest.

Both sides run in the same process run against the same broker and topic: the raw producer is the ceiling
(same durable settings, acks=all, idempotent), ingest adds HTTP, authentication, validation, the privacy
guard and per-event results. Target: ingest at least 0.5x the raw producer.

    python -m bench.bench_ingest [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson

from kp.apikeys import create_key
from kp.local import LocalStack
from kp.sitetokens import create_site_token
from services.ingest.service import encode
from shared.events import usage_event_adapter
from shared.kafka import USAGE_EVENTS, make_producer
from shared.reference import municipalities, services

ROOT = Path(__file__).resolve().parent.parent
TARGET_RATIO = 0.5


def make_events(count: int) -> list[dict[str, Any]]:
    """Valid, varied usage events of the six cities (session starts and completed steps)."""
    cities = [m.ags for m in municipalities()]
    leika = [s.leika_key for s in services()]
    base = datetime.now(UTC) - timedelta(minutes=5)
    events: list[dict[str, Any]] = []
    for i in range(count):
        step = i % 2 == 1
        events.append({
            "id": str(uuid.uuid4()), "type": "usage.step.completed" if step else "usage.session.started",
            "source": "kp-bench", "time": (base + timedelta(milliseconds=i)).isoformat(),
            "municipality": cities[i % len(cities)], "service": leika[i % len(leika)],
            "session": f"bench{i // 2:012d}",
            "data": {"step": 1, "step_name": "Start"} if step else {"channel": "web", "device": "mobile"},
        })
    return events


async def raw_producer(bootstrap: str, records: list[tuple[bytes, bytes]], window: int = 5000) -> float:
    """Send pre-encoded (key, value) pairs with the durable producer settings; return seconds until all acked."""
    producer = make_producer(bootstrap)
    await producer.start()
    try:
        started = time.perf_counter()
        pending: list[asyncio.Future[Any]] = []
        for key, value in records:
            pending.append(await producer.send(USAGE_EVENTS.name, value=value, key=key))
            if len(pending) >= window:  # bounded in flight, like a real producer loop
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
        return time.perf_counter() - started
    finally:
        await producer.stop()


async def http_ingest(url: str, api_key: str, bodies: list[bytes], concurrency: int) -> tuple[float, list[float]]:
    """POST pre-serialised batches with `concurrency` requests in flight; return seconds and request latencies."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    latencies: list[float] = []
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60, limits=limits) as client:

        async def worker() -> None:
            while not queue.empty():
                body = queue.get_nowait()
                t0 = time.perf_counter()
                resp = await client.post("/v1/events", content=body)
                latencies.append(time.perf_counter() - t0)
                if resp.status_code != 200 or resp.json()["rejected"]:
                    raise RuntimeError(f"ingest answered {resp.status_code}: {resp.text[:300]}")

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started, latencies


BENCH_ORIGIN = "https://www.bench-stadt.example"
BROWSER_UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"


async def tracker_collect(url: str, token: str, count: int, concurrency: int) -> float:
    """POST `count` single-hit collect requests (text/plain, as `sendBeacon` sends them); return seconds."""
    headers = {"Content-Type": "text/plain;charset=UTF-8", "Origin": BENCH_ORIGIN, "User-Agent": BROWSER_UA}
    cities = [f"/seite-{i}" for i in range(50)]
    bodies = [orjson.dumps({"token": token, "hits": [{"kind": "pageview", "path": cities[i % 50],
                                                      "ref": "www.google.de", "width": 1280,
                                                      "session": f"bench{i:012d}"}]}) for i in range(count)]
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60, limits=limits) as client:

        async def worker() -> None:
            while not queue.empty():
                resp = await client.post("/v1/collect", content=queue.get_nowait())
                if resp.status_code != 200 or resp.json().get("accepted_count") != 1:
                    raise RuntimeError(f"collect answered {resp.status_code}: {resp.text[:300]}")

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started


def batches(events: list[dict[str, Any]], size: int) -> list[bytes]:
    return [orjson.dumps(events[i:i + size]) for i in range(0, len(events), size)]


async def measure(stack: LocalStack, quick: bool) -> list[dict[str, Any]]:
    assert stack.kafka_bootstrap
    assert stack.database_url
    count = 20_000 if quick else 100_000
    batch_size, concurrency, rounds = 500, 8, (1 if quick else 3)
    api_key, _ = await create_key(stack.database_url, "kp-bench", [m.ags for m in municipalities()], 1e6,
                                  1_000_000, "benchmark")
    site = await create_site_token(stack.database_url, municipalities()[0].ags, services()[0].leika_key,
                                   [BENCH_ORIGIN], 1e6, 1_000_000, "benchmark")
    hits = 5_000 if quick else 20_000
    # One client address sends everything here, so the per-client limit is lifted for the run.
    proc = stack.service("ingest", extra_env={"KP_LOG_LEVEL": "WARNING", "KP_TRACKER_CLIENT_RATE_PER_S": "1e9",
                                              "KP_TRACKER_CLIENT_BURST": "1000000000"})
    proc.start()
    try:
        await asyncio.to_thread(proc.wait_ready)
        warm = make_events(2_000)
        await http_ingest(proc.url, api_key, batches(warm, batch_size), concurrency)
        await raw_producer(stack.kafka_bootstrap, [encode(usage_event_adapter.validate_python(e)) for e in warm])
        await tracker_collect(proc.url, site.token, 500, concurrency)
        raw_rates: list[float] = []
        http_rates: list[float] = []
        tracker_rates: list[float] = []
        latencies: list[float] = []
        for _ in range(rounds):
            events = make_events(count)
            # The same bytes ingest would produce: the validated event, serialised the way ingest does it.
            records = [encode(usage_event_adapter.validate_python(e)) for e in events]
            raw_rates.append(count / await raw_producer(stack.kafka_bootstrap, records))
            events = make_events(count)  # fresh ids, so the two runs never share events
            seconds, lat = await http_ingest(proc.url, api_key, batches(events, batch_size), concurrency)
            http_rates.append(count / seconds)
            latencies += lat
            tracker_rates.append(hits / await tracker_collect(proc.url, site.token, hits, concurrency * 4))
    finally:
        proc.stop()
    raw, http = max(raw_rates), max(http_rates)
    ratio = http / raw
    tracker = max(tracker_rates)
    q = statistics.quantiles(latencies, n=100)
    label = f"{count} events, batches of {batch_size}, {concurrency} concurrent requests, best of {rounds}"
    return [
        {"measure": f"HTTP batch ingest ({label})", "value": round(http), "unit": "events/s",
         "baseline": "raw aiokafka producer, same bytes, acks=all, idempotent", "baseline_value": round(raw),
         "ratio": round(ratio, 3), "target": f">= {TARGET_RATIO}x baseline", "met": ratio >= TARGET_RATIO},
        {"measure": f"tracker endpoint /v1/collect ({hits} page views, 1 hit per request, {concurrency * 4} "
                    f"concurrent, best of {rounds})", "value": round(tracker), "unit": "events/s",
         "baseline": "HTTP batch ingest, same run", "baseline_value": round(http),
         "ratio": round(tracker / http, 3), "target": None, "met": None},
        {"measure": "raw aiokafka producer (baseline, absolute)", "value": round(raw), "unit": "events/s",
         "baseline": None, "baseline_value": None, "ratio": None, "target": None, "met": None},
        {"measure": f"ingest request latency p50 (batch of {batch_size})", "value": round(q[49] * 1000, 1),
         "unit": "ms", "baseline": None, "baseline_value": None, "ratio": None, "target": None, "met": None},
        {"measure": f"ingest request latency p99 (batch of {batch_size})", "value": round(q[98] * 1000, 1),
         "unit": "ms", "baseline": None, "baseline_value": None, "ratio": None, "target": None, "met": None},
    ]


def run(quick: bool) -> list[dict[str, Any]]:
    """Benchmark entry point for the harness: rows of measure, value, unit, baseline, ratio, target, met."""
    run_dir = ROOT / ".run" / f"bench-ingest-{os.getpid()}"
    stack = LocalStack.from_env(run_dir)
    stack.start_infra()
    try:
        rows = asyncio.run(measure(stack, quick))
    finally:
        stack.stop()
    stack.purge()  # kept (with the ingest log) only when the run failed
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    header = ("measure", "value", "unit", "baseline", "ratio", "target", "met")
    lines = [header] + [tuple("" if r.get(k) is None else str(r.get(k) if k != "baseline" else
                                                                 f"{r['baseline']}: {r['baseline_value']}")
                               for k in header) for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for n, line in enumerate(lines):
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)))
        if n == 0:
            print("  ".join("-" * w for w in widths))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer events, one round")
    print_table(run(parser.parse_args().quick))
