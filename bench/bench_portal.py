"""Data portal search: p50/p99 of a German full-text search with facets over 10,000 registered datasets
(2,000 in the quick smoke run).

Baseline, same run and same data: the same one-statement page + facets query with an unindexed `ILIKE` substring match
(what a portal without a search index does; it also misses inflected forms such as "Parkplätze" for
"Parkplatz"). Datasets are registered through the service layer, as the write API does.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from bench.harness import bench_stack
from services.publisher.portal import service, vocab
from services.publisher.portal.repository import DATASET_COLUMNS, FACET_SQL, SearchQuery
from services.publisher.portal.schemas import DatasetIn
from shared.db import create_pool
from shared.reference import municipalities

ROOT = Path(__file__).resolve().parent.parent
TARGET_P99_MS = 50.0
BASE_URL = "https://opendata.example.org"

TOPICS = [
    ('Parkplätze', 'Parken', 'TRAN'),
    ('Parkhäuser', 'Parken', 'TRAN'),
    ('Ladesäulen für Elektroautos', 'E-Mobilität', 'ENER'),
    ('Haushaltsplan', 'Haushalt', 'ECON'),
    ('Jahresabschluss', 'Finanzen', 'ECON'),
    ('Luftqualität', 'Umwelt', 'ENVI'),
    ('Lärmkartierung', 'Lärm', 'ENVI'),
    ('Baumkataster', 'Bäume', 'ENVI'),
    ('Spielplätze', 'Freizeit', 'EDUC'),
    ('Kindertagesstätten', 'Kinderbetreuung', 'SOCI'),
    ('Schulen', 'Bildung', 'EDUC'),
    ('Wahlergebnisse', 'Wahlen', 'GOVE'),
    ('Ratsbeschlüsse', 'Stadtverordnetenversammlung', 'GOVE'),
    ('Bebauungspläne', 'Stadtplanung', 'REGI'),
    ('Haltestellen', 'Nahverkehr', 'TRAN'),
    ('Radverkehrszählung', 'Radverkehr', 'TRAN'),
    ('Abfallkalender', 'Abfall', 'ENVI'),
    ('Bevölkerungsstand', 'Bevölkerung', 'SOCI'),
    ('Straßenverzeichnis', 'Straßen', 'REGI'),
    ('Friedhöfe', 'Friedhof', 'SOCI'),
    ('Sportstätten', 'Sport', 'EDUC'),
    ('Trinkwasserqualität', 'Wasser', 'HEAL'),
    ('Apotheken-Notdienst', 'Gesundheit', 'HEAL'),
    ('Gewerbeanmeldungen', 'Wirtschaft', 'ECON'),
    ('Baustellen', 'Verkehr', 'TRAN'),
    ('Hochwasserpegel', 'Hochwasser', 'ENVI'),
]
PHRASES = [
    "Die Daten werden von der Stadtverwaltung erhoben und regelmäßig aktualisiert.",
    "Enthalten sind Standorte, Kapazitäten und Öffnungszeiten.", "Angaben je Stadtteil und Kalenderjahr.",
    "Grundlage sind die Erhebungen des zuständigen Fachamtes.", "Die Werte sind vorläufig und können sich ändern.",
    "Geokoordinaten im Bezugssystem ETRS89.", "Vergleichswerte der Vorjahre sind enthalten.",
    "Messungen an festen Stationen im Stadtgebiet.", "Die Liste wird bei jeder Änderung fortgeschrieben.",
]
QUERIES = ["Parkplatz", "Haushalt", "Luft", "Bäume", "Ladesäule", "Kita", "Wahl", "Radverkehr", "Haltestelle",
           "Spielplatz", "Abfall", "Schule", "Lärm", "Bebauungsplan", "Hochwasser", "Sportstätte", "Friedhof",
           "Gewerbe", "Baustelle", "Trinkwasser"]


def dataset(i: int, rnd: random.Random, run_id: str) -> DatasetIn:
    topic, keyword, theme = rnd.choice(TOPICS)
    m = rnd.choice(municipalities())
    year = rnd.randint(2015, 2025)
    fmt = rnd.choice(["CSV", "JSON", "GEOJSON", "PDF", "XLSX"])
    return DatasetIn.model_validate({
        "name": f"bench-{run_id}-{i}",
        "municipality": m.ags,
        "title": f"{topic} {m.name} {year}",
        "description": " ".join([f"{topic} in {m.name} für das Jahr {year}.", *rnd.sample(PHRASES, 3)]),
        "keywords": [keyword, m.name, str(year)],
        "themes": [vocab.THEME_BASE + theme],
        "licence": rnd.choice(list(vocab.LICENCES)[:5]),
        "contact_point": {"name": "Open-Data-Team", "email": "opendata@example.org"},
        "frequency": vocab.FREQUENCY_BASE + rnd.choice(["ANNUAL", "MONTHLY", "IRREG"]),
        "distributions": [{"access_url": f"https://example.org/{run_id}/{i}.{fmt.lower()}", "format": fmt}],
    })


async def seed(pool: asyncpg.Pool, n: int, run_id: str) -> float:
    rnd = random.Random(7)
    started = time.perf_counter()
    async with pool.acquire() as conn:
        key = await service.issue_key(conn, f"bench-{run_id}", [m.ags for m in municipalities()])
        officer = await service.authenticate(conn, key)
        for start in range(0, n, 500):
            async with conn.transaction():
                for i in range(start, min(n, start + 500)):
                    await service.create(conn, officer, dataset(i, rnd, run_id), datetime.now(UTC), BASE_URL)
        await conn.execute("ANALYZE portal_datasets")
    return time.perf_counter() - started


async def remove(pool: asyncpg.Pool, run_id: str) -> None:
    """Delete this run's datasets so a reused database starts the next run with none of them."""
    async with pool.acquire() as conn, conn.transaction():
        ids = [r["id"] for r in await conn.fetch("SELECT id FROM portal_datasets WHERE name LIKE $1",
                                                  f"bench-{run_id}-%")]
        await conn.execute("DELETE FROM portal_dataset_versions WHERE dataset_id = ANY($1::uuid[])", ids)
        await conn.execute("DELETE FROM portal_datasets WHERE id = ANY($1::uuid[])", ids)
        await conn.execute("UPDATE portal_api_keys SET revoked_at = now() WHERE label = $1", f"bench-{run_id}")


async def ilike_search(conn: Any, q: SearchQuery, limit: int) -> tuple[int, list[Any]]:
    """Baseline: the same one-statement page + facets, matched with an unindexed ILIKE."""
    where = ("status = 'published' AND (title ILIKE '%' || $1 || '%' OR description ILIKE '%' || $1 || '%' "
             "OR keyword_text ILIKE '%' || $1 || '%')")
    rows = await conn.fetch(
        f"""WITH m AS MATERIALIZED (SELECT {DATASET_COLUMNS} FROM portal_datasets WHERE {where}),
                 f AS (SELECT (SELECT count(*) FROM m) AS total,
                              (SELECT json_agg(json_build_array(facet, value, n) ORDER BY facet, n DESC, value)
                               FROM ({FACET_SQL}) x) AS facets),
                 p AS (SELECT {DATASET_COLUMNS} FROM m ORDER BY modified_at DESC, name LIMIT $2)
            SELECT f.total, f.facets, p.* FROM f LEFT JOIN p ON true""", q.text, limit)
    results = [service.to_dataset(r, BASE_URL) for r in rows if r["id"] is not None]
    return int(rows[0]["total"]), results


async def timed(n: int, call: Callable[[int], Awaitable[Any]]) -> list[float]:
    for i in range(min(20, n)):  # warm-up: plans cached, pages in memory
        await call(i)
    out = []
    for i in range(n):
        t = time.perf_counter()
        await call(i)
        out.append((time.perf_counter() - t) * 1000)
    return out


def pct(values: list[float], p: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1]


async def measure(database_url: str, quick: bool) -> list[dict[str, Any]]:
    n_datasets = 2_000 if quick else 10_000  # the quick smoke run must fit the harness budget
    n_queries = 100 if quick else 1000
    run_id = uuid.uuid4().hex[:8]
    pool = await create_pool(database_url, 1, 2)
    try:
        seed_s = await seed(pool, n_datasets, run_id)
        filters = [{}, {"municipalities": [municipalities()[0].ags]}, {"formats": ["CSV"]}]

        def query(i: int) -> SearchQuery:
            return SearchQuery(text=QUERIES[i % len(QUERIES)], sort="relevance" if i % 2 else "date",
                               **filters[i % len(filters)])

        async with pool.acquire() as conn:
            async def fts(i: int) -> Any:
                return await service.search(conn, query(i), 1, 20, BASE_URL)

            async def ilike(i: int) -> Any:
                return await ilike_search(conn, SearchQuery(text=QUERIES[i % len(QUERIES)]), 20)

            hits = (await service.search(conn, SearchQuery(text="Parkplatz"), 1, 20, BASE_URL)).count
            substring_hits = (await ilike_search(conn, SearchQuery(text="Parkplatz"), 20))[0]
            fts_ms = await timed(n_queries, fts)
            ilike_ms = await timed(n_queries, ilike)
            total = await conn.fetchval("SELECT count(*) FROM portal_datasets WHERE status = 'published'")
    finally:
        await remove(pool, run_id)
        await pool.close()
    p99, base99 = pct(fts_ms, 99), pct(ilike_ms, 99)
    common = {"datasets": total, "queries": n_queries}
    return [
        {"measure": f"portal search p99 (German FTS + facets, {total} datasets)", "value": p99, "unit": "ms",
         "baseline": "ILIKE, no index", "baseline_value": base99, "target": f"< {TARGET_P99_MS:.0f} ms",
         "met": p99 < TARGET_P99_MS, **common},
        {"measure": "portal search p50", "value": pct(fts_ms, 50), "unit": "ms", "baseline": "ILIKE, no index",
         "baseline_value": pct(ilike_ms, 50), **common},
        {"measure": "matches for 'Parkplatz' (stemming finds Parkplätze)", "value": hits, "unit": "datasets",
         "baseline": "ILIKE substring", "baseline_value": substring_hits},
        {"measure": f"register {n_datasets} datasets through the service layer", "value": seed_s, "unit": "s"},
    ]


def run(quick: bool) -> list[dict[str, Any]]:
    """Entry point of the harness; uses KP_DATABASE_URL (with KP_KAFKA_BOOTSTRAP) or starts its own stack."""
    with bench_stack("portal") as stack:
        assert stack.database_url
        return asyncio.run(measure(stack.database_url, quick))


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(json.dumps(row, default=str))
