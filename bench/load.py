"""Load generator: realistic usage traffic to ingest at a fixed offered rate, bounded in count and time.

Runs as its own process (`python -m bench.load --url ... --rate ... --seconds ...`), so the client's CPU is
not the measured service's. Events come from `kp.simulator.Simulator` (the six cities, the service catalogue,
funnels with abandonment, payments, feedback); every batch a client retries after an error or a lost answer is
re-sent with the same event ids, and a share of batches is deliberately sent twice, as platforms do after a
timeout. Loopback only. Writes a JSON summary (accepted ids, statuses, latencies, marker acceptance times).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from kp.simulator import Simulator
from shared.reference import municipalities

MARKER_SOURCE = "kp-bench-marker"


def hour_floor(t: datetime) -> datetime:
    return t.replace(minute=0, second=0, microsecond=0)


def marker_period(base: datetime, index: int) -> datetime:
    """Hour bucket of marker `index`: one distinct past hour per marker, so each has its own KPI row."""
    return hour_floor(base) - timedelta(hours=3 + index)


def marker_event(municipality: str, service: str, base: datetime, index: int) -> dict[str, Any]:
    """A `usage.session.started` alone in its hour bucket for the marker pair."""
    return {
        "id": str(uuid.uuid4()), "type": "usage.session.started", "source": MARKER_SOURCE,
        "time": (marker_period(base, index) + timedelta(minutes=30)).isoformat(),
        "municipality": municipality, "service": service, "session": f"marker{index:06d}x{uuid.uuid4().hex[:8]}",
        "data": {"channel": "web", "device": "desktop"},
    }


async def create_api_key(database_url: str, platform: str = "kp-bench", municipality_codes: list[str] | None = None,
                         rate_per_s: float = 1e6, burst: int = 1_000_000) -> str | None:
    """An ingest API key (default: the six cities) whose rate limit lies far above the offered load.

    Returns None when this ingest version has no keys (then requests go without `Authorization`).
    """
    try:
        from kp.apikeys import create_key
    except ImportError:
        return None
    codes = municipality_codes or [m.ags for m in municipalities()]
    plain, _ = await create_key(database_url, platform, codes, rate_per_s, burst, "load generator")
    return plain


@dataclass
class LoadConfig:
    url: str
    rate: float
    seconds: float
    max_events: int | None = None
    batch_size: int = 50
    concurrency: int = 8
    seed: int = 1
    duplicate_share: float = 0.02
    api_key: str | None = None
    pair: tuple[str, str] | None = None
    """Send every event for this (municipality, service) instead of the simulator's choice."""
    markers: int = 0
    marker_pair: tuple[str, str] | None = None
    marker_base: datetime | None = None
    max_attempts: int = 60
    request_timeout_s: float = 30.0
    retry_grace_s: float = 90.0
    """Batches still failing this long after the offered load ended are given up (the run stays bounded)."""


@dataclass
class LoadResult:
    sent_events: int = 0
    accepted_ids: set[str] = field(default_factory=set)
    rejected: int = 0
    rejected_reasons: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)
    retries: int = 0
    duplicate_resends: int = 0
    gave_up_batches: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    markers: list[dict[str, Any]] = field(default_factory=list)
    accepted_by_pair: Counter[str] = field(default_factory=Counter)
    retry_after_seen: int = 0
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies_ms)

        def pct(p: float) -> float | None:
            return lat[min(len(lat) - 1, int(p * len(lat)))] if lat else None

        return {
            "sent_events": self.sent_events, "accepted": len(self.accepted_ids), "rejected": self.rejected,
            "rejected_reasons": dict(self.rejected_reasons), "statuses": dict(self.statuses),
            "retries": self.retries, "duplicate_resends": self.duplicate_resends,
            "gave_up_batches": self.gave_up_batches, "retry_after_seen": self.retry_after_seen,
            "request_ms_p50": pct(0.5), "request_ms_p99": pct(0.99), "seconds": round(self.seconds, 3),
            "accepted_per_s": len(self.accepted_ids) / self.seconds if self.seconds else None,
            "markers": self.markers, "accepted_by_pair": dict(self.accepted_by_pair),
        }


def _check_loopback(url: str) -> None:
    host = urlsplit(url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"the load generator only targets loopback, not {host!r}")


class Load:
    """Paces batches at `rate` events/s over `concurrency` connections; stops at the count or time bound."""

    def __init__(self, config: LoadConfig) -> None:
        _check_loopback(config.url)
        self.config = config
        now = datetime.now(UTC)
        # Sessions span up to ~40 minutes; starting them an hour back keeps every event in the past.
        self.sim = Simulator(seed=config.seed, source="kp-bench", now=now - timedelta(hours=1))
        self.stream = self.sim.events()
        self.rng = random.Random(config.seed)
        self.result = LoadResult()
        self.marker_base = config.marker_base or now
        self._next_marker = 0
        self._stop = asyncio.Event()
        self._give_up_at = time.monotonic() + config.seconds + config.retry_grace_s

    def stop(self) -> None:
        """Ask the load to end after the batches in flight."""
        self._stop.set()

    def _batch(self, index: int, markers_due: int) -> list[dict[str, Any]]:
        batch = [next(self.stream) for _ in range(self.config.batch_size)]
        if self.config.pair is not None:
            muni, svc = self.config.pair
            for e in batch:
                e["municipality"], e["service"] = muni, svc
        while self._next_marker < min(markers_due, self.config.markers) and self.config.marker_pair:
            muni, svc = self.config.marker_pair
            batch.append(marker_event(muni, svc, self.marker_base, self._next_marker))
            self._next_marker += 1
        return batch

    async def _send(self, client: httpx.AsyncClient, batch: list[dict[str, Any]]) -> None:
        """Send one batch until every event got an answer; retries re-send the same ids."""
        cfg, res = self.config, self.result
        body = json.dumps(batch).encode()
        for attempt in range(cfg.max_attempts):
            if time.monotonic() > self._give_up_at:
                break
            started = time.perf_counter()
            try:
                resp = await client.post("/v1/events", content=body, headers={"Content-Type": "application/json"})
            except httpx.HTTPError as exc:
                res.statuses[type(exc).__name__] += 1
                res.retries += 1
                await asyncio.sleep(min(0.1 * 2**attempt, 2.0))
                continue
            res.statuses[str(resp.status_code)] += 1
            if resp.status_code in (429, 500, 502, 503, 504):
                res.retries += 1
                retry_after = resp.headers.get("Retry-After")
                if retry_after is not None:
                    res.retry_after_seen += 1
                # Honour Retry-After, bounded, so a bounded run stays bounded.
                wait = float(retry_after) if retry_after else min(0.1 * 2**attempt, 2.0)
                await asyncio.sleep(min(wait, 2.0))
                continue
            if resp.status_code >= 400:
                res.rejected += len(batch)
                res.rejected_reasons[f"http_{resp.status_code}"] += len(batch)
                return
            res.latencies_ms.append((time.perf_counter() - started) * 1000)
            accepted_at = time.time()
            answer = resp.json()
            accepted = set(answer.get("accepted", []))
            for e in batch:
                if e["id"] in accepted and e["id"] not in res.accepted_ids:
                    res.accepted_ids.add(e["id"])
                    res.accepted_by_pair[f"{e['municipality']}:{e['service']}"] += 1
                    if e["source"] == MARKER_SOURCE:
                        res.markers.append({"period": e["time"][:13], "accepted_at": accepted_at})
            for r in answer.get("rejected", []):
                res.rejected += 1
                for reason in r.get("reasons", []) or [{"type": "unknown"}]:
                    res.rejected_reasons[str(reason.get("type"))] += 1
            return
        res.gave_up_batches += 1

    async def run(self) -> LoadResult:
        cfg = self.config
        headers = {"Authorization": f"Bearer {cfg.api_key}"} if cfg.api_key else {}
        limits = httpx.Limits(max_connections=cfg.concurrency, max_keepalive_connections=cfg.concurrency)
        queue: asyncio.Queue[list[dict[str, Any]] | None] = asyncio.Queue(maxsize=cfg.concurrency)
        loop = asyncio.get_running_loop()
        started = loop.time()
        marker_every = cfg.seconds / cfg.markers if cfg.markers else 0.0

        async def worker(client: httpx.AsyncClient) -> None:
            while (batch := await queue.get()) is not None:
                await self._send(client, batch)
                if self.rng.random() < cfg.duplicate_share:
                    # A lost answer: the platform sends the very same batch again.
                    self.result.duplicate_resends += len(batch)
                    await self._send(client, batch)

        async with httpx.AsyncClient(base_url=cfg.url, timeout=cfg.request_timeout_s, headers=headers,
                                     limits=limits) as client:
            workers = [asyncio.create_task(worker(client)) for _ in range(cfg.concurrency)]
            index = 0
            while not self._stop.is_set():
                elapsed = loop.time() - started
                if elapsed >= cfg.seconds or (cfg.max_events is not None and self.result.sent_events >= cfg.max_events):
                    break
                markers_due = int(elapsed / marker_every) + 1 if marker_every else 0
                batch = self._batch(index, markers_due)
                if cfg.max_events is not None:
                    batch = batch[: cfg.max_events - self.result.sent_events]
                self.result.sent_events += len(batch)
                await queue.put(batch)
                index += 1
                due = started + self.result.sent_events / cfg.rate
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), timeout=max(0.0, due - loop.time()))
            for _ in workers:
                await queue.put(None)
            await asyncio.gather(*workers)
        self.result.seconds = loop.time() - started
        return self.result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument("--url", required=True, help="ingest base URL (loopback)")
    p.add_argument("--rate", type=float, required=True, help="offered events per second")
    p.add_argument("--seconds", type=float, required=True, help="upper bound of the run time")
    p.add_argument("--max-events", type=int, help="upper bound of the events sent")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--duplicate-share", type=float, default=0.02, help="share of batches sent twice")
    p.add_argument("--api-key", help="ingest API key (else KP_BENCH_API_KEY)")
    p.add_argument("--markers", type=int, default=0, help="marker events for freshness, spread over the run")
    p.add_argument("--marker-pair", help="MUNICIPALITY:SERVICE of the marker events")
    p.add_argument("--marker-base", help="ISO time the marker hours count back from")
    p.add_argument("--out", type=Path, help="write the JSON summary here (else stdout)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    import os

    a = parse_args(argv)
    pair = tuple(a.marker_pair.split(":")) if a.marker_pair else None
    cfg = LoadConfig(
        url=a.url, rate=a.rate, seconds=a.seconds, max_events=a.max_events, batch_size=a.batch_size,
        concurrency=a.concurrency, seed=a.seed, duplicate_share=a.duplicate_share,
        api_key=a.api_key or os.environ.get("KP_BENCH_API_KEY") or None, markers=a.markers,
        marker_pair=(pair[0], pair[1]) if pair else None,
        marker_base=datetime.fromisoformat(a.marker_base) if a.marker_base else None,
    )
    load = Load(cfg)
    with contextlib.suppress(NotImplementedError):
        import signal

        loop = asyncio.new_event_loop()
        loop.add_signal_handler(signal.SIGTERM, load.stop)
    result = loop.run_until_complete(load.run())
    loop.close()
    text = json.dumps(result.summary())
    if a.out:
        a.out.write_text(text)
    else:
        sys.stdout.write(text + "\n")
    return 0 if result.gave_up_batches == 0 else 2


if __name__ == "__main__":
    raise SystemExit(main())
