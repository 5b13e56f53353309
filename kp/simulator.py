"""Demo traffic: realistic, seeded usage sessions for the six member cities, sent to ingest over HTTP."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from shared.events.upcast import CURRENT_VERSIONS
from shared.reference import municipalities, services

# Shares are illustrative demo assumptions, not measurements.
AUTH_MIX = [("bundid_basis", "substantiell", 0.55), ("eid", "hoch", 0.25), ("elster", "substantiell", 0.15),
            ("eu_id", "hoch", 0.03), ("other", "niedrig", 0.02)]
PAYMENT_MIX = [("epaybl", 0.2), ("kreditkarte", 0.3), ("paypal", 0.25), ("sepa_lastschrift", 0.2),
               ("rechnung", 0.05)]
STEP_NAMES = ["Start", "Angaben zur Person", "Anschrift", "Nachweise", "Zahlung", "Zusammenfassung"]
STARS = [(5, 0.45), (4, 0.3), (3, 0.12), (2, 0.07), (1, 0.06)]


@dataclass(frozen=True)
class CityProfile:
    """How one city's online services differ (illustrative demo assumptions): drop-out, devices, satisfaction."""

    drop_factor: float
    mobile_share: float
    happy: float
    """Shift of the star ratings towards 5 (positive) or 1 (negative)."""
    payments: tuple[tuple[str, float], ...]


CITY_PROFILES = {
    "06413000": CityProfile(1.25, 0.46, -0.10, (("epaybl", 0.15), ("kreditkarte", 0.25), ("paypal", 0.4),
                                                ("sepa_lastschrift", 0.15), ("rechnung", 0.05))),
    "06534014": CityProfile(0.75, 0.40, 0.10, (("epaybl", 0.35), ("kreditkarte", 0.2), ("paypal", 0.2),
                                               ("sepa_lastschrift", 0.2), ("rechnung", 0.05))),
    "06531005": CityProfile(1.0, 0.52, 0.0, (("epaybl", 0.2), ("kreditkarte", 0.3), ("paypal", 0.3),
                                             ("sepa_lastschrift", 0.15), ("rechnung", 0.05))),
    "06533009": CityProfile(1.1, 0.30, 0.05, (("epaybl", 0.1), ("kreditkarte", 0.2), ("paypal", 0.15),
                                              ("sepa_lastschrift", 0.35), ("rechnung", 0.2))),
    "06631009": CityProfile(0.85, 0.35, 0.15, (("epaybl", 0.3), ("kreditkarte", 0.25), ("paypal", 0.2),
                                               ("sepa_lastschrift", 0.2), ("rechnung", 0.05))),
    "06532023": CityProfile(1.15, 0.38, -0.05, (("epaybl", 0.2), ("kreditkarte", 0.3), ("paypal", 0.25),
                                                ("sepa_lastschrift", 0.2), ("rechnung", 0.05))),
}
DEFAULT_PROFILE = CityProfile(1.0, 0.38, 0.0, tuple(PAYMENT_MIX))


def _pick(rng: random.Random, options: list[tuple[Any, float]]) -> Any:
    return rng.choices([o[0] for o in options], weights=[o[1] for o in options])[0]


@dataclass
class Simulator:
    """Generates complete sessions; the same seed yields the same events (ids included)."""

    seed: int = 1
    source: str = "kp-simulator"
    now: datetime | None = None

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self._ids = random.Random(self.seed ^ 0x5EED)

    def _id(self) -> str:
        return str(uuid.UUID(int=self._ids.getrandbits(128), version=4))

    def session(self, municipality: str | None = None, service: str | None = None,
                start: datetime | None = None) -> list[dict[str, Any]]:
        """One citizen session: start, steps, maybe auth/payment, then submit or abandon, maybe feedback.

        Without arguments a city (by population), a service and a start in the last ten minutes are drawn.
        """
        rng = self.rng
        now = self.now or datetime.now(UTC)
        if municipality is None:
            weights = [m.population for m in municipalities()]
            municipality = rng.choices(municipalities(), weights=weights)[0].ags
        if service is None:
            service = rng.choice(services()).leika_key
        profile = CITY_PROFILES.get(municipality, DEFAULT_PROFILE)
        session = f"s{self._id().replace('-', '')[:20]}"
        if start is None:
            start = now - timedelta(seconds=rng.randint(0, 600))
        r = rng.random()
        device = "mobile" if r < profile.mobile_share else ("tablet" if r < profile.mobile_share + 0.07 else "desktop")
        base = {"source": self.source, "municipality": municipality, "service": service, "session": session}
        t = start
        out: list[dict[str, Any]] = []

        def ev(kind: str, data: dict[str, Any]) -> None:
            out.append({"id": self._id(), "type": kind, "schema_version": CURRENT_VERSIONS.get(kind, 1),
                        "time": t.isoformat(), "data": data, **base})

        ev("usage.page.viewed", {"page": f"/leistungen/{service}", "device": device,
                                 "referrer": rng.choice(["search", "social", "internal", "municipal", "direct",
                                                         "other"])})
        ev("usage.session.started", {"channel": "web" if rng.random() < 0.9 else "app", "device": device})
        steps = rng.randint(4, len(STEP_NAMES))
        # Each step has a chance to lose the citizen; payment and evidence upload lose the most.
        drop = {1: 0.06, 2: 0.05, 3: 0.12, 4: 0.15, 5: 0.04, 6: 0.03}
        completed = 0
        for step in range(1, steps + 1):
            if rng.random() < drop[step] * profile.drop_factor:
                break
            t += timedelta(seconds=rng.randint(20, 240))
            ev("usage.step.completed", {"step": step, "step_name": STEP_NAMES[step - 1]})
            completed = step
            if step == 2:
                method, level = _pick(rng, [((m, lv), w) for m, lv, w in AUTH_MIX])
                ev("usage.auth.completed", {"method": method, "level": level})
            if step == 5:
                ev("usage.payment.completed", {"method": _pick(rng, list(profile.payments)),
                                               "amount_cents": rng.choice([1000, 1250, 2880, 3700, 6000])})
        if completed == steps:
            t += timedelta(seconds=rng.randint(5, 60))
            ev("usage.session.submitted", {"duration_s": int((t - start).total_seconds())})
            if rng.random() < 0.3:
                stars = _pick(rng, STARS)
                if rng.random() < abs(profile.happy) * 2:
                    stars = min(5, stars + 1) if profile.happy > 0 else max(1, stars - 1)
                ev("usage.feedback.given", {"stars": stars})
        else:
            t += timedelta(seconds=rng.randint(60, 900))
            ev("usage.session.abandoned", {"last_step": completed})
        # A session is reported once it has ended: shift it back so that no event lies in the future
        # (ingest rejects those as `from_future`).
        overshoot = t - now
        if overshoot > timedelta(0):
            for e in out:
                e["time"] = (datetime.fromisoformat(e["time"]) - overshoot).isoformat()
        return out

    def events(self) -> Iterator[dict[str, Any]]:
        while True:
            yield from self.session()


async def post_batch(client: httpx.AsyncClient, batch: list[dict[str, Any]], attempts: int) -> int | None:
    """POST one batch to ingest, retrying network errors, 429 and 503 (as `Retry-After` says); return how many
    events ingest accepted, or None when it did not take the batch within `attempts` tries."""
    for attempt in range(attempts):
        try:
            resp = await client.post("/v1/events", json=batch)
        except httpx.HTTPError:
            await asyncio.sleep(min(0.2 * 2**attempt, 5))
            continue
        if resp.status_code in (429, 503):
            await asyncio.sleep(float(resp.headers.get("Retry-After", "1")))
            continue
        resp.raise_for_status()
        return len(resp.json()["accepted"])
    return None


async def run(ingest_url: str, rate: float, seed: int, duration_s: float | None, api_key: str | None = None,
              batch_size: int = 50) -> int:
    """Send events at about `rate` per second; return how many were accepted."""
    sim = Simulator(seed=seed)
    stream = sim.events()
    accepted = 0
    loop = asyncio.get_running_loop()
    started = loop.time()
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    async with httpx.AsyncClient(base_url=ingest_url, timeout=30, headers=headers) as client:
        while duration_s is None or loop.time() - started < duration_s:
            batch = [next(stream) for _ in range(batch_size)]
            accepted += await post_batch(client, batch, attempts=10) or 0
            await asyncio.sleep(batch_size / rate)
    return accepted
