"""Demo data with depth for `kp stack up`: 13 months of usage history, application cases, portal datasets.

Everything is deterministic by seed (relative to the day of the first start) and goes through the normal
paths: usage events through ingest's HTTP API (big batches), application events to `application.events.v1`
(the workflow engine takes the cases through their definitions), datasets through the portal API. It runs
once per stack; a marker file in the run folder remembers that it ran.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import math
import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import httpx

from kp.eakte import UNREADABLE
from kp.simulator import Simulator, post_batch
from services.workflow.definitions import HumanStep, load_definitions
from shared.reference import municipalities, services

if TYPE_CHECKING:
    from kp.local import LocalStack
    from services.workflow.definitions import Definition

BERLIN = ZoneInfo("Europe/Berlin")
HISTORY_DAYS = 396
"""13 months back from the day of the first start."""
SESSIONS_PER_100K = 16.0
"""Average sessions per day and 100,000 inhabitants (illustrative)."""
WEEKDAY = (1.15, 1.05, 1.0, 1.0, 0.9, 0.35, 0.25)
MONTH = (1.2, 1.05, 1.0, 0.95, 0.95, 0.9, 0.8, 0.7, 1.15, 1.1, 1.0, 0.85)
"""January (new year, tax) and September (moves at the start of the semester) are busy, August is quiet."""
HOURS = [(h, w) for h, w in enumerate((0.2, 0.1, 0.1, 0.1, 0.1, 0.3, 0.8, 2, 4, 6, 6, 5.5, 4.5, 5, 5, 4.5,
                                       4, 3.5, 3, 3, 2.5, 2, 1, 0.5))]
BATCH = 1000
SOURCE = "kp-simulator"
MARKER = "demo-data.json"
AGGREGATOR_GROUP = "kp-aggregator"


def _service_weights() -> list[tuple[str, float]]:
    """A few services carry most of the traffic (registration of residence, ID cards, ...)."""
    keys = [s.leika_key for s in services()]
    return [(k, 1.0 / (i + 1) ** 1.3) for i, k in enumerate(keys)]


def _poisson(rng: random.Random, mean: float) -> int:
    # Knuth's method is fine for the small means of one city and day.
    limit, k, p = math.exp(-mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def history(seed: int, today: date, days: int = HISTORY_DAYS, now: datetime | None = None) -> Iterator[dict[str, Any]]:
    """Usage events of the `days` days before `today` (Europe/Berlin), in time order per day."""
    rng = random.Random(f"history-{seed}")
    cutoff = now or datetime.now(UTC)
    sim = Simulator(seed=seed * 7919 + 1, source=SOURCE, now=cutoff)
    weights = _service_weights()
    keys, shares = [k for k, _ in weights], [w for _, w in weights]
    hours, hour_w = [h for h, _ in HOURS], [w for _, w in HOURS]
    for offset in range(days, -1, -1):
        day = today - timedelta(days=offset)
        growth = 0.8 + 0.2 * (days - offset) / days  # online services gain users over the year
        factor = WEEKDAY[day.weekday()] * MONTH[day.month - 1] * growth
        for m in municipalities():
            mean = SESSIONS_PER_100K * m.population / 100_000 * factor
            for _ in range(_poisson(rng, mean)):
                service = rng.choices(keys, weights=shares)[0]
                local = datetime.combine(day, time(rng.choices(hours, weights=hour_w)[0], rng.randrange(60)),
                                         BERLIN)
                start = local.astimezone(UTC)
                if start > cutoff - timedelta(hours=2):
                    continue
                yield from sim.session(m.ags, service, start)


async def send_history(ingest_url: str, api_key: str, events: Iterator[dict[str, Any]], concurrency: int = 4,
                       progress: Callable[[int], None] | None = None) -> int:
    """POST the events in batches of 1,000 with a few requests in flight; return how many were accepted."""
    accepted = 0
    queue: asyncio.Queue[list[dict[str, Any]] | None] = asyncio.Queue(maxsize=concurrency * 2)

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal accepted
        while (batch := await queue.get()) is not None:
            taken = await post_batch(client, batch, attempts=20)
            if taken is None:
                raise RuntimeError("ingest did not accept a demo history batch")
            accepted += taken
            if progress is not None:
                progress(accepted)

    headers = {"Authorization": f"Bearer {api_key}"}
    async with httpx.AsyncClient(base_url=ingest_url, timeout=60, headers=headers) as client:
        workers = [asyncio.create_task(worker(client)) for _ in range(concurrency)]
        batch: list[dict[str, Any]] = []
        for event in events:
            batch.append(event)
            if len(batch) == BATCH:
                await queue.put(batch)
                batch = []
        if batch:
            await queue.put(batch)
        for _ in workers:
            await queue.put(None)
        await asyncio.gather(*workers)
    return accepted


# ----------------------------------------------------------------------------------- application cases


@dataclass(frozen=True)
class Scenario:
    """One path through a workflow definition, as the events a portal or Fachverfahren would send."""

    name: str
    weight: float


SCENARIOS = (
    Scenario("complete", 4),          # all documents, fee paid, decided by the Fachverfahren: closed
    Scenario("nachforderung", 2),     # documents missing, requested, supplied later, then decided
    Scenario("waiting_documents", 1),  # documents requested, nothing came yet
    Scenario("unpaid", 1),            # fee not yet paid
    Scenario("clerk", 3),             # complete and paid: an open task in the clerk's queue
    Scenario("withdrawn", 0.5),
    Scenario("akte_stoerung", 0.3),   # decided, but the E-Akte refuses an unreadable scan: parked after retries
)
PAYMENT_METHODS = ("epaybl", "kreditkarte", "paypal", "sepa_lastschrift")


def _outcomes(definition: Definition) -> tuple[list[str], list[float]]:
    """Outcomes a clerk step of the definition can take (a partial approval only where one exists), weighted."""
    weights = {"approved": 8.0, "rejected": 1.0, "partially_approved": 1.0}
    possible: set[str] = {d for step in definition.steps if isinstance(step, HumanStep) for d in step.decisions}
    names: list[str] = [o for o in weights if o in possible] or ["approved"]
    return names, [weights[o] for o in names]


def applications(seed: int, now: datetime, per_city: int = 24) -> list[dict[str, Any]]:
    """Application events for every workflow definition and city, each case on a path of its definition."""
    rng = random.Random(f"applications-{seed}")
    ids = random.Random(f"application-ids-{seed}")
    definitions = [d for d in load_definitions().all() if d.service]
    out: list[dict[str, Any]] = []
    for m in municipalities():
        for n in range(per_city):
            d = definitions[n % len(definitions)]
            # every city has each path at least once, the rest is drawn by weight
            scenario = SCENARIOS[n] if n < len(SCENARIOS) else rng.choices(
                SCENARIOS, weights=[s.weight for s in SCENARIOS])[0]
            app_id = f"demo-{m.ags}-{seed}-{n:04d}"
            t = now - timedelta(days=rng.uniform(0.5, 40))
            base = {"source": "kp-demo-fachverfahren", "municipality": m.ags, "service": d.service,
                    "application_id": app_id}

            def ev(kind: str, data: dict[str, Any], at: datetime, base: dict[str, Any] = base) -> None:
                out.append({"id": str(uuid.UUID(int=ids.getrandbits(128), version=4)), "type": kind,
                            "time": min(at, now).isoformat(), "data": data, **base})

            required = list(d.required_documents)
            missing = scenario.name in ("nachforderung", "waiting_documents") and required
            submitted_docs = required[:-1] if missing else required
            fee = d.fees.fee_for(m.ags) if d.fees else None
            if scenario.name == "akte_stoerung":
                submitted_docs = [*required, UNREADABLE]
            ev("application.submitted", {"channel": rng.choice(["online", "online", "fit_connect", "paper"]),
                                         "documents": submitted_docs, "fee_cents": fee}, t)
            if scenario.name == "withdrawn":
                ev("application.withdrawn", {}, t + timedelta(days=2))
                continue
            if scenario.name == "waiting_documents":
                continue
            if missing:
                t += timedelta(days=rng.uniform(2, 10))
                ev("application.documents.added", {"documents": required[-1:]}, t)
            if fee and scenario.name != "unpaid":
                t += timedelta(hours=rng.uniform(1, 48))
                ev("application.payment.received", {"amount_cents": fee, "method": rng.choice(PAYMENT_METHODS)}, t)
            if scenario.name in ("complete", "nachforderung", "akte_stoerung"):
                t += timedelta(days=rng.uniform(1, 14))
                outcome = rng.choices(*_outcomes(d))[0]
                ev("application.decided", {"outcome": outcome}, t)
    return out


async def publish_applications(bootstrap: str, events: list[dict[str, Any]]) -> None:
    """Send the application events to `application.events.v1`, keyed like every producer does."""
    from shared.events.application import application_event_adapter
    from shared.kafka import APPLICATION_EVENTS, make_producer

    producer = make_producer(bootstrap)
    await producer.start()
    try:
        for body in events:
            event = application_event_adapter.validate_python(body)  # the contract, before it leaves
            await producer.send(APPLICATION_EVENTS.name, json.dumps(body).encode(), key=event.kafka_key)
        await producer.flush()
    finally:
        await producer.stop()


# ---------------------------------------------------------------------------------------- portal datasets

THEME = "http://publications.europa.eu/resource/authority/data-theme/"
FREQ = "http://publications.europa.eu/resource/authority/frequency/"


def _votes(r: random.Random) -> list[object]:
    n = r.randint(800, 2500)
    return [n, int(n * r.uniform(0.35, 0.6))]


def _places(r: random.Random) -> list[object]:
    n = r.randint(25, 140)
    return [n, r.randint(0, n // 3)]


@dataclass(frozen=True)
class Topic:
    """A kind of dataset every city publishes: metadata and a generator for the rows of its CSV."""

    key: str
    title: str
    text: str
    keywords: list[str]
    theme: str
    frequency: str
    columns: list[str]
    row: Callable[[random.Random], list[object]]


DATASETS = tuple(Topic(*t) for t in (
    ("parkplaetze", "Parkplätze und Parkhäuser", "Lage, Kapazität und Tarife der öffentlichen Parkplätze und "
     "Parkhäuser.", ["Parken", "Verkehr", "Mobilität"], "TRAN", "MONTHLY",
     ["name", "stellplaetze", "tarif_eur_pro_stunde"], lambda r: [r.randint(40, 900), f"{r.choice([1, 1.5, 2])}"]),
    ("haushalt", "Haushaltsplan: Erträge und Aufwendungen", "Ergebnishaushalt nach Produktbereichen.",
     ["Haushalt", "Finanzen"], "GOVE", "ANNUAL", ["produktbereich", "ertraege_eur", "aufwendungen_eur"],
     lambda r: [r.randint(1, 90) * 100_000, r.randint(1, 95) * 100_000]),
    ("luftqualitaet", "Luftqualität: Monatsmittel", "Monatsmittel von Stickstoffdioxid und Feinstaub an den "
     "Messstellen der Stadt.", ["Umwelt", "Luft", "Stickstoffdioxid"], "ENVI", "MONTHLY",
     ["messstelle", "no2_ug_m3", "pm10_ug_m3"], lambda r: [r.randint(12, 45), r.randint(9, 30)]),
    ("wahlergebnisse", "Kommunalwahl: Ergebnisse nach Wahlbezirk", "Stimmen je Wahlvorschlag und Wahlbezirk.",
     ["Wahlen", "Politik"], "GOVE", "IRREG", ["wahlbezirk", "wahlberechtigte", "waehler"],
     _votes),
    ("kitas", "Kindertagesstätten", "Standorte, Träger und Plätze der Kindertagesstätten.",
     ["Kinderbetreuung", "Bildung", "Kita"], "EDUC", "ANNUAL", ["einrichtung", "plaetze", "u3_plaetze"],
     _places),
))
SLUGS = {"06413000": "offenbach", "06534014": "marburg", "06531005": "giessen", "06533009": "limburg",
         "06631009": "fulda", "06532023": "wetzlar"}


def datasets(seed: int, today: date) -> list[tuple[dict[str, Any], str]]:
    """(description, hosted CSV) per city and topic; each marked as demo data in title, text and keywords."""
    rng = random.Random(f"datasets-{seed}")
    out: list[tuple[dict[str, Any], str]] = []
    for m in municipalities():
        slug = SLUGS.get(m.ags, m.ags)
        for t in DATASETS:
            key, title, text, keywords, theme, freq, columns = (t.key, t.title, t.text, t.keywords, t.theme,
                                                                t.frequency, t.columns)
            buf = io.StringIO()
            writer = csv.writer(buf, lineterminator="\r\n")
            writer.writerow(columns)
            for i in range(rng.randint(6, 14)):
                writer.writerow([f"{columns[0].capitalize()} {i + 1}", *t.row(rng)])
            description = {
                "name": f"demo-{slug}-{key}",
                "municipality": m.ags,
                "title": f"{title} {m.name} (Demodaten)",
                "description": f"{text} Demodaten von Kommunal-Pulse: erzeugt, nicht gemessen.",
                "keywords": [*keywords, "Demodaten"],
                "themes": [THEME + theme],
                "licence": "http://dcat-ap.de/def/licenses/dl-by-de/2.0",
                "contact_point": {"name": f"Open-Data-Team {m.name}", "email": f"opendata@{slug}.example"},
                "temporal": {"start": str(today.replace(day=1) - timedelta(days=365)), "end": str(today)},
                "frequency": FREQ + freq,
                "distributions": [],
            }
            out.append((description, buf.getvalue()))
    return out


async def register_datasets(publisher_url: str, key: str, items: list[tuple[dict[str, Any], str]]) -> int:
    """Create each dataset through the portal API and upload its CSV; existing names are left alone."""
    created = 0
    async with httpx.AsyncClient(base_url=publisher_url, timeout=60,
                                 headers={"Authorization": f"Bearer {key}"}) as client:
        for description, content in items:
            resp = await client.post("/v1/portal/datasets", json=description)
            if resp.status_code == 409:
                continue
            resp.raise_for_status()
            name = description["name"]
            up = await client.put(f"/v1/portal/datasets/{name}/files/{name}.csv", content=content.encode(),
                                  headers={"Content-Type": "text/csv"})
            up.raise_for_status()
            created += 1
    return created


# ---------------------------------------------------------------------------------------------- seeding


async def aggregator_lag(bootstrap: str, database_url: str) -> int:
    """Usage events on Kafka the aggregator has not folded into PostgreSQL yet (its positions live there)."""
    import asyncpg
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from services.aggregator import repository
    from shared.kafka import USAGE_EVENTS

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(USAGE_EVENTS.name, p) for p in range(USAGE_EVENTS.partitions)]
        ends = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
    conn = await asyncpg.connect(database_url)
    try:
        stored = await repository.load_offsets(conn, AGGREGATOR_GROUP, USAGE_EVENTS.name)
    finally:
        await conn.close()
    return sum(max(end - stored.get(tp.partition, 0), 0) for tp, end in ends.items())


async def wait_folded(bootstrap: str, database_url: str, timeout_s: float = 300.0,
                      echo: Callable[[str], None] | None = None) -> int:
    """Wait until the aggregator has folded the history (or the timeout passed); return the lag left."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    shown = -1
    while (lag := await aggregator_lag(bootstrap, database_url)) > 0 and loop.time() < deadline:
        if echo is not None and lag != shown:
            echo(f"  aggregator: {lag:,} events still to fold")
            shown = lag
        await asyncio.sleep(5)
    return lag


async def _portal_key(database_url: str, agss: list[str]) -> str:
    """A data officer key for the demo datasets of all cities (only its hash is stored)."""
    import asyncpg

    from services.publisher.portal import service

    conn = await asyncpg.connect(database_url)
    try:
        return await service.issue_key(conn, "kp-demo-data", agss)
    finally:
        await conn.close()


async def _revoke(database_url: str, key_id: uuid.UUID) -> None:
    import asyncpg

    from services.ingest import repository

    conn = await asyncpg.connect(database_url)
    try:
        await repository.revoke_api_key(conn, key_id)
    finally:
        await conn.close()


async def seed_once(stack: LocalStack, seed: int, echo: Callable[[str], None]) -> bool:
    """Load the demo data into a fresh stack; return False when this stack already has it."""
    from kp.apikeys import DEMO_PLATFORM, create_key

    marker = stack.run_dir / MARKER
    if marker.exists():
        return False
    assert stack.database_url
    assert stack.kafka_bootstrap
    now = datetime.now(UTC)
    today = now.astimezone(BERLIN).date()
    all_agss = [m.ags for m in municipalities()]
    echo("Loading demo data (first start only): 13 months of usage history, application cases, datasets ...")
    plain, key = await create_key(stack.database_url, DEMO_PLATFORM, all_agss, 100_000.0, 200_000,
                                  "demo history of `kp stack up`")
    try:
        last = [0]

        def progress(n: int) -> None:
            if n - last[0] >= 50_000:
                last[0] = n
                echo(f"  usage history: {n:,} events accepted")

        accepted = await send_history(stack.services["ingest"].url, plain, history(seed, today, now=now),
                                      progress=progress)
    finally:
        assert key.id is not None
        await _revoke(stack.database_url, key.id)
    echo(f"  usage history: {accepted:,} events over {HISTORY_DAYS} days")
    lag = await wait_folded(stack.kafka_bootstrap, stack.database_url, echo=echo)
    if lag:
        echo(f"  aggregator: {lag:,} events not folded yet; the dashboard fills in as it catches up")
    events = applications(seed, now)
    await publish_applications(stack.kafka_bootstrap, events)
    echo(f"  application cases: {len({e['application_id'] for e in events})} ({len(events)} events)")
    portal_key = await _portal_key(stack.database_url, all_agss)
    created = await register_datasets(stack.services["publisher"].url, portal_key, datasets(seed, today))
    echo(f"  portal datasets: {created} (marked as Demodaten)")
    marker.write_text(json.dumps({"seed": seed, "loaded_at": now.isoformat(), "usage_events": accepted}))
    return True
