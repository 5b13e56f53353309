"""Open-data API: latency and throughput of a KPI query, full response against the If-None-Match -> 304 path.

Data: a year of day and month KPIs for the six member cities (volumes scaled by population, a few services,
about 35 metric/dimension rows per city, service and day, many of them small; each row with a random key sum as
the aggregator would store it),
under service keys of their own so the data does not mix with other benchmarks. The publisher app runs in
this process (ASGI, with its lifespan: pool, LISTEN connection); requests are sent one after another, so
p50/p99 are the app's own latency and requests/s its single-client throughput.

Measures, same run and same query: the full path (SQL, Cell Key Method perturbation, derived values, JSON, ETag;
wall-clock
latency and the CPU time of this process per request, which other work on the machine does not inflate) and
the conditional path (`If-None-Match` with the current ETag -> 304, no database). Targets: full p99 < 20 ms, 304
path at least 5x the full path's requests/s. And what the perturbation does to the published counts of the
same queries: mean absolute deviation and share of changed cells (all counts, and counts below 10).

Run: `python -m bench.bench_publisher [--quick]` (uses KP_DATABASE_URL or starts its own PostgreSQL).
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import sys
import time
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from asgi_lifespan import LifespanManager

from bench.harness import bench_stack
from services.publisher.app import create_app
from services.publisher.kpis import repository
from services.publisher.kpis import service as kpi_service
from services.publisher.kpis.api import VersionedCache
from services.publisher.kpis.service import BERLIN
from services.publisher.settings import PublisherSettings
from shared import ckm
from shared.reference import municipalities

ROOT = Path(__file__).resolve().parent.parent
TARGET_P99_MS = 20.0
TARGET_RATIO = 5.0
YEAR_START = date(2025, 1, 1)
SERVICE_PREFIX = "999999990000"  # + 2 digits: benchmark-only LeiKa-shaped keys


def _day_rows(rng: random.Random, volume: float) -> list[tuple[str, str, int]]:
    started = max(0, int(rng.gauss(volume, volume ** 0.5 + 1)))
    submitted = int(started * rng.uniform(0.45, 0.7))
    abandoned = int(started * rng.uniform(0.15, 0.3))
    rows = [("sessions_started", "", started), ("sessions_submitted", "", submitted),
            ("sessions_abandoned", "", abandoned)]
    web = int(started * 0.8)
    rows += [("channel", "web", web), ("channel", "app", started - web)]
    desktop, mobile = int(started * 0.5), int(started * 0.42)
    rows += [("device", "desktop", desktop), ("device", "mobile", mobile),
             ("device", "tablet", started - desktop - mobile)]
    left = abandoned
    for step in range(4):
        n = left if step == 3 else int(left * rng.uniform(0.2, 0.5))
        rows.append(("abandoned_after_step", str(step), n))
        left -= n
    rows += [("step_completed", str(s), int(started * (1 - 0.1 * s))) for s in range(1, 5)]
    rows += [("auth", "bundid_basis:substantiell", int(submitted * 0.7)), ("auth", "eid:hoch", submitted // 5)]
    rows += [("payment", "paypal", submitted // 3), ("payment", "sepa_lastschrift", submitted // 4),
             ("payment", "kreditkarte", submitted // 10)]
    fb = submitted // 4
    rows += [("feedback", str(s), int(fb * w)) for s, w in ((1, 0.05), (2, 0.05), (3, 0.15), (4, 0.35), (5, 0.4))]
    left = submitted
    for bound in ("120", "300", "600", "1200", "inf"):
        n = left if bound == "inf" else int(left * rng.uniform(0.1, 0.4))
        rows.append(("duration_le", bound, n))
        left -= n
    rows += [("page_views", page, int(started * f)) for page, f in (("/start", 1.6), ("/formular", 1.2),
                                                                    ("/bestaetigung", 0.5))]
    return [r for r in rows if r[2] > 0]


async def seed(url: str, services: int, days: int) -> tuple[str, str]:
    """COPY a year of day and month rows; returns (municipality, service) of the measured query."""
    rng = random.Random(20261125)
    keys = [f"{SERVICE_PREFIX}{i:02d}" for i in range(services)]
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("DELETE FROM kpi_values WHERE service LIKE $1", f"{SERVICE_PREFIX}%")
        records: list[tuple[Any, ...]] = []
        for m in municipalities():
            for si, svc in enumerate(keys):
                volume = m.population / 2_000 / (si + 1)
                months: dict[tuple[date, str, str], int] = {}
                for d in range(days):
                    day = YEAR_START + timedelta(days=d)
                    start = datetime.combine(day, datetime.min.time(), BERLIN)
                    for metric, dim, value in _day_rows(rng, volume * (0.6 if day.weekday() >= 5 else 1.0)):
                        keys_sum = sum(rng.getrandbits(32) for _ in range(min(value, 3))) % ckm.MODULUS
                        records.append(("day", start, m.ags, svc, metric, dim, value, keys_sum))
                        key = (day.replace(day=1), metric, dim)
                        old = months.get(key, (0, 0))
                        months[key] = (old[0] + value, (old[1] + keys_sum) % ckm.MODULUS)
                for (month, metric, dim), (value, keys_sum) in months.items():
                    start = datetime.combine(month, datetime.min.time(), BERLIN)
                    records.append(("month", start, m.ags, svc, metric, dim, value, keys_sum))
        await conn.copy_records_to_table(
            "kpi_values", records=records,
            columns=["granularity", "period_start", "municipality", "service", "metric", "dimension", "value",
                     "key_sum"])
        await conn.execute("ANALYZE kpi_values")
        print(f"seeded {len(records)} kpi_values rows", file=sys.stderr)
    finally:
        await conn.close()
    return municipalities()[1].ags, keys[0]


async def _timed(client: httpx.AsyncClient, path: str, params: dict[str, str], headers: dict[str, str], n: int,
                 expect: int, cpu: list[float] | None = None) -> tuple[list[float], float]:
    """Wall-clock latencies in ms and requests/s; `cpu` collects the CPU time of this process per request
    (what the request costs here, without waiting for PostgreSQL or for other work on the machine)."""
    latencies: list[float] = []
    t0 = time.perf_counter()
    for _ in range(n):
        s, c = time.perf_counter(), time.process_time()
        r = await client.get(path, params=params, headers=headers)
        latencies.append((time.perf_counter() - s) * 1000)
        if cpu is not None:
            cpu.append((time.process_time() - c) * 1000)
        if r.status_code != expect:
            raise RuntimeError(f"{path} answered {r.status_code}, expected {expect}: {r.text[:200]}")
    return latencies, n / (time.perf_counter() - t0)


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]


async def deviation_rows(url: str, label: str, params: dict[str, str]) -> list[dict[str, Any]]:
    """Mean absolute deviation and share of changed cells among the published counts of a query."""
    q = kpi_service.KpiQuery(tuple(params["municipality"].split(",")), tuple(params["service"].split(",")),
                             params["period"], date.fromisoformat(params["from"]),  # type: ignore[arg-type]
                             date.fromisoformat(params["to"]))
    start, end = q.bounds()
    conn = await asyncpg.connect(url)
    try:
        tables = kpi_service.build_tables(await repository.kpi_rows(
            conn, q.period, start, end, list(q.municipalities), list(q.services)))
    finally:
        await conn.close()
    pairs = [(t.raw[c][0], v) for t in tables for c, v in t.cells.items()]
    small = [(a, b) for a, b in pairs if a < 10]
    out = []
    for name, group in ((f"all {len(pairs)} counts", pairs), (f"{len(small)} counts below 10", small)):
        if not group:
            continue
        out += [
            {"measure": f"perturbation: mean absolute deviation, {name} ({label})",
             "value": round(sum(abs(a - b) for a, b in group) / len(group), 3), "unit": "",
             "target": f"<= {ckm.MAX_DEVIATION} each", "met": all(abs(a - b) <= ckm.MAX_DEVIATION for a, b in group)},
            {"measure": f"perturbation: share of changed cells, {name} ({label})",
             "value": round(sum(1 for a, b in group if a != b) / len(group), 3), "unit": "ratio"},
        ]
    return out


async def measure(url: str, quick: bool) -> list[dict[str, Any]]:
    municipality, service = await seed(url, services=3 if quick else 6, days=365)
    n_full, n_304 = (300, 3000) if quick else (1500, 15000)
    app = create_app(PublisherSettings(database_url=url, environment="test", log_json=False))
    rows: list[dict[str, Any]] = []
    queries = [
        ("1 city x 1 service, 31 days by day", "/v1/kpis",
         {"municipality": municipality, "service": service, "period": "day", "from": "2025-03-01",
          "to": "2025-03-31"}),
        ("1 city x all services, 12 months", "/v1/kpis",
         {"municipality": municipality, "period": "month", "from": "2025-01-01", "to": "2025-12-31",
          "service": ",".join(f"{SERVICE_PREFIX}{i:02d}" for i in range(3))}),
    ]
    async with LifespanManager(app, startup_timeout=60) as manager, httpx.AsyncClient(
        transport=httpx.ASGITransport(app=manager.app), base_url="http://bench"
    ) as client:
        for _ in range(600):  # the LISTEN connection is up within a moment; without it there is no 304 path
            if app.state.changes.live:
                break
            await asyncio.sleep(0.05)
        for label, path, params in queries:
            first = await client.get(path, params=params)
            first.raise_for_status()
            items = len(first.json()["items"])
            etag = first.headers["etag"]
            cached_tables = app.state.tables
            app.state.tables = VersionedCache(0)  # computed: SQL, perturbation, derived values every time
            await _timed(client, path, params, {}, 20, 200)  # warm-up: pool, plans, caches
            cpu: list[float] = []
            full, full_rps = await _timed(client, path, params, {}, n_full, 200, cpu)
            app.state.tables = cached_tables  # tables reused within the data version (the default)
            await _timed(client, path, params, {}, 5, 200)
            warm, warm_rps = await _timed(client, path, params, {}, n_full, 200)
            cond, cond_rps = await _timed(client, path, params, {"If-None-Match": etag}, n_304, 304)
            p99 = _pct(full, 99)
            rows += [
                {"measure": f"full, computed: p50 ({label}, {items} items)", "value": round(_pct(full, 50), 2),
                 "unit": "ms", "requests_per_s": round(full_rps, 1)},
                {"measure": f"full, computed: p99 ({label})", "value": round(p99, 2), "unit": "ms",
                 "target": f"< {TARGET_P99_MS:g} ms", "met": p99 < TARGET_P99_MS},
                {"measure": f"full, computed: CPU time per request p50 ({label})", "value": round(_pct(cpu, 50), 2),
                 "unit": "ms"},
                {"measure": f"full, computed: CPU time per request p99 ({label})", "value": round(_pct(cpu, 99), 2),
                 "unit": "ms"},
                {"measure": f"full, tables reused in data version: p50 ({label})", "value": round(_pct(warm, 50), 2),
                 "unit": "ms", "requests_per_s": round(warm_rps, 1)},
                {"measure": f"full, tables reused in data version: p99 ({label})", "value": round(_pct(warm, 99), 2),
                 "unit": "ms", "target": f"< {TARGET_P99_MS:g} ms", "met": _pct(warm, 99) < TARGET_P99_MS},
                {"measure": f"304 path: p50 ({label})", "value": round(_pct(cond, 50), 3), "unit": "ms"},
                {"measure": f"304 path: p99 ({label})", "value": round(_pct(cond, 99), 3), "unit": "ms"},
                {"measure": f"304 path requests/s ({label})", "value": round(cond_rps, 1), "unit": "req/s",
                 "baseline": "full, computed", "baseline_value": round(full_rps, 1),
                 "ratio": round(cond_rps / full_rps, 2), "target": f">= {TARGET_RATIO:g}x",
                 "met": cond_rps / full_rps >= TARGET_RATIO},
                {"measure": f"304 path requests/s vs tables reused ({label})", "value": round(cond_rps, 1),
                 "unit": "req/s", "baseline": "full, tables reused", "baseline_value": round(warm_rps, 1),
                 "ratio": round(cond_rps / warm_rps, 2)},
            ]
            rows += await deviation_rows(url, label, params)
    return rows


def run(quick: bool) -> list[dict[str, Any]]:
    """Entry point of the harness; uses KP_DATABASE_URL or starts its own PostgreSQL (and Kafka)."""
    with bench_stack("publisher") as stack:
        assert stack.database_url
        return asyncio.run(measure(stack.database_url, quick))


def _print_table(rows: list[dict[str, Any]]) -> None:
    print(f"{'measure':<80} {'value':>10} {'unit':<6} {'baseline':>10} {'ratio':>7} {'target':>10} met")
    for r in rows:
        base = r.get("baseline_value")
        ratio = r.get("ratio")
        print(f"{r['measure']:<80} {r['value']:>10} {r['unit']:<6} {'' if base is None else base:>10} "
              f"{'' if ratio is None else ratio:>7} {r.get('target') or '':>10} {r.get('met', '')}")


if __name__ == "__main__":
    result = run(quick="--quick" in sys.argv)
    _print_table(result)
    if "--json" in sys.argv:
        print(json.dumps(result, default=str))
