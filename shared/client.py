"""Python client for platforms sending usage events to Kommunal-Pulse ingest.

Batches events, gzips the body, retries temporary failures (429, 503, other 5xx, network errors) with
exponential backoff and jitter, honouring `Retry-After`. A retry re-sends the same bytes, so the same event
ids: the aggregator counts each id once, so retrying is always safe. Permanent failures raise: a refused
request (400/401/403/404/413/415) raises `RequestRefused`, rejected events raise `EventsRejected` after the
accepted ones are durable.

    async with IngestClient("https://ingest.example", api_key) as client:
        await client.send(events)
"""

from __future__ import annotations

import asyncio
import gzip
import random
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import httpx
import orjson

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class IngestError(Exception):
    """Base of the client's errors."""


class RequestRefused(IngestError):
    """Ingest refused the whole request for a reason a retry cannot fix (problem details attached)."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        super().__init__(f"ingest refused the request ({status}): {problem.get('detail') or problem}")
        self.status = status
        self.problem = problem


class EventsRejected(IngestError):
    """Some events were rejected permanently; every other event was accepted and is durable."""

    def __init__(self, result: SendResult) -> None:
        reasons = sorted({r.get("reason", "?") for r in result.rejected})
        super().__init__(f"{len(result.rejected)} event(s) rejected ({', '.join(reasons)}); "
                         f"{len(result.accepted)} accepted")
        self.result = result


class RetriesExhausted(IngestError):
    """Ingest stayed unavailable for all attempts; nothing of the failing batch is known to be accepted."""


@dataclass
class SendResult:
    accepted: list[str] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    attempts: int = 0


def with_id(event: dict[str, Any]) -> dict[str, Any]:
    """The event with an `id`: a missing one is chosen once here, so every retry carries the same id."""
    return event if event.get("id") else {**event, "id": str(uuid.uuid4())}


class IngestClient:
    """Send usage events to `POST /v1/events`, in batches, safely retried."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        *,
        batch_size: int = 500,
        max_batch_bytes: int = 900_000,
        compress: bool = True,
        max_attempts: int = 8,
        backoff_base_s: float = 0.2,
        backoff_max_s: float = 30.0,
        timeout_s: float = 30.0,
        raise_on_rejected: bool = True,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        headers = {"Content-Type": "application/json", "User-Agent": "kommunal-pulse-client/1"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        if compress:
            headers["Content-Encoding"] = "gzip"
        self._http = httpx.AsyncClient(base_url=base_url, headers=headers, timeout=timeout_s, transport=transport)
        self.batch_size = batch_size
        self.max_batch_bytes = max_batch_bytes
        self.compress = compress
        self.max_attempts = max_attempts
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.raise_on_rejected = raise_on_rejected
        self._sleep = sleep
        self._pending: list[dict[str, Any]] = []

    async def __aenter__(self) -> IngestClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        try:
            if exc_type is None:
                await self.flush()
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def add(self, event: dict[str, Any]) -> SendResult | None:
        """Queue one event; sends a batch when `batch_size` events are queued."""
        self._pending.append(with_id(event))
        if len(self._pending) >= self.batch_size:
            return await self.flush()
        return None

    async def flush(self) -> SendResult:
        """Send everything queued."""
        pending, self._pending = self._pending, []
        return await self.send(pending)

    async def send(self, events: Iterable[dict[str, Any]]) -> SendResult:
        """Send events in batches; raise `EventsRejected` at the end if any were rejected."""
        total = SendResult()
        for batch in self._batches([with_id(e) for e in events]):
            result = await self._send_batch(batch)
            total.accepted += result.accepted
            total.rejected += result.rejected
            total.attempts += result.attempts
        if total.rejected and self.raise_on_rejected:
            raise EventsRejected(total)
        return total

    def _batches(self, events: Sequence[dict[str, Any]]) -> Iterable[list[bytes]]:
        batch: list[bytes] = []
        size = 2
        for event in events:
            encoded = orjson.dumps(event)
            if batch and (len(batch) >= self.batch_size or size + len(encoded) + 1 > self.max_batch_bytes):
                yield batch
                batch, size = [], 2
            batch.append(encoded)
            size += len(encoded) + 1
        if batch:
            yield batch

    def backoff(self, attempt: int, retry_after: str | None) -> float:
        """Full-jitter exponential backoff, never shorter than the server's `Retry-After`."""
        delay = random.uniform(0, min(self.backoff_max_s, self.backoff_base_s * 2**attempt))
        if retry_after is not None and retry_after.strip().isdigit():
            delay = max(delay, float(retry_after))
        return delay

    async def _send_batch(self, batch: list[bytes]) -> SendResult:
        body = b"[" + b",".join(batch) + b"]"
        if self.compress:
            body = gzip.compress(body, compresslevel=5)
        last = "no attempt"
        for attempt in range(self.max_attempts):
            retry_after: str | None = None
            try:
                resp = await self._http.post("/v1/events", content=body)
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if resp.status_code == 200:
                    data = resp.json()
                    return SendResult(list(data["accepted"]), list(data["rejected"]), attempt + 1)
                if resp.status_code not in RETRY_STATUSES:
                    try:
                        problem = resp.json()
                    except ValueError:
                        problem = {"detail": resp.text[:500]}
                    raise RequestRefused(resp.status_code, problem)
                retry_after = resp.headers.get("Retry-After")
                last = f"HTTP {resp.status_code}"
            if attempt + 1 < self.max_attempts:
                await self._sleep(self.backoff(attempt, retry_after))
        raise RetriesExhausted(f"ingest unavailable after {self.max_attempts} attempts (last: {last})")
