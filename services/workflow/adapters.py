"""Ports to the outside world: the clock and the E-Akte (records management), each with its implementations."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from xml.sax.saxutils import escape

import httpx
import orjson


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    """Wall-clock time in UTC."""

    def now(self) -> datetime:
        return datetime.now(UTC)


@dataclass
class ManualClock:
    """A clock that only moves when told to; lets tests drive deadlines without waiting."""

    current: datetime = field(default_factory=lambda: datetime.now(UTC))

    def now(self) -> datetime:
        return self.current

    def advance(self, delta: timedelta) -> datetime:
        self.current += delta
        return self.current


class EAkteError(RuntimeError):
    """Filing failed; the step is retried with the same idempotency key."""


@dataclass(frozen=True)
class FilingRecord:
    """What goes into the E-Akte for one case step: metadata and codes, no personal data."""

    case_id: str
    application_id: str
    municipality: str
    service: str
    definition: str
    definition_version: int
    step: str
    decision: str | None
    documents: list[str]
    filed_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "filed_at": self.filed_at.isoformat()}


class EAkte(Protocol):
    async def file(self, key: str, record: FilingRecord) -> str:
        """File the record once per idempotency key; return the document reference."""
        ...


def xdomea_like(record: FilingRecord, key: str) -> str:
    """A small XDOMEA-style export (Akte / Vorgang / Dokument) of a filing record."""
    r = record
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<Vorgang xmlns="urn:kommunal-pulse:xdomea-export:1">\n'
        f"  <Identifikation><ID>{escape(r.case_id)}</ID><Aktenzeichen>{escape(r.application_id)}</Aktenzeichen>"
        "</Identifikation>\n"
        f"  <Behoerde><AGS>{r.municipality}</AGS></Behoerde>\n"
        f"  <Leistung><LeiKa>{r.service}</LeiKa></Leistung>\n"
        f"  <Dokument><ID>{escape(key)}</ID><Schritt>{escape(r.step)}</Schritt>"
        f"<Entscheidung>{escape(r.decision or '')}</Entscheidung>"
        f"<Datum>{r.filed_at.isoformat()}</Datum>"
        + "".join(f"<Anlage>{escape(d)}</Anlage>" for d in r.documents)
        + "</Dokument>\n</Vorgang>\n"
    )


class FileSystemEAkte:
    """Reference adapter: an append-only filing journal per municipality; repeated calls only count.

    Every filing call appends one JSON line (key, reference, record) to this adapter's current journal segment,
    `<root>/<municipality>/journal-<adapter>-<n>.jsonl`. A key's document is its first line and its call count
    the number of its lines over all segments, so several service instances can share one root without
    coordination (a case is locked while it files, so two calls for one key never race). Documents that earlier
    releases filed as `<root>/<municipality>/<key>.json` are still read. `export_xdomea` writes an XDOMEA-style
    XML (Akte / Vorgang / Dokument) of every filed document.

    Group commit: the calls that arrive while a group is being made durable are appended together, and one
    fdatasync per segment (plus a directory fsync when a segment is created) makes them durable before any call
    of the group returns. A crash can leave a partial last line: that call was never reported as filed, so only
    lines ending in a newline count. A segment whose write or sync failed is abandoned (the next call starts a
    new one), so an acknowledged line never follows a partial one; whole lines of such a failed group that did
    reach the disk only raise their keys' call counts (those calls are repeated by their cases anyway).
    Creating a file per filing, as before, cost more than the rest of the case under load (inode allocation),
    and its time swung with the disk's history.
    """

    SEGMENT_BYTES = 64 * 1024 * 1024
    """A segment is closed after the group that takes it past this size."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._name = f"{time.time_ns():x}-{os.getpid()}-{secrets.token_hex(3)}"
        self._numbers = itertools.count()
        self._segments: dict[str, _Segment] = {}
        self._queue: list[tuple[str, FilingRecord, asyncio.Future[str]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._sync: ThreadPoolExecutor | None = None

    async def file(self, key: str, record: FilingRecord) -> str:
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._queue.append((key, record, future))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_groups())
        return await asyncio.shield(future)

    async def _write_groups(self) -> None:
        try:
            while self._queue:
                group, self._queue = self._queue, []
                try:
                    await self._write_group(group)
                except Exception as exc:  # a bug, not the disk: fail the group's calls rather than strand them
                    for _, _, future in group:
                        if not future.done():
                            future.set_exception(EAkteError(f"E-Akte filing failed: {exc!r}"))
        finally:
            # Cleared in the same step as the last look at the queue: a call queued after it starts a new writer.
            self._writer = None

    async def _write_group(self, group: list[tuple[str, FilingRecord, asyncio.Future[str]]]) -> None:
        outcomes: list[str | Exception] = [""] * len(group)
        lines: dict[str, list[tuple[int, bytes]]] = {}
        for i, (key, record, _) in enumerate(group):
            reference = f"eakte:{record.municipality}:{key}"
            outcomes[i] = reference
            lines.setdefault(record.municipality, []).append((i, orjson.dumps(
                {"key": key, "reference": reference, "record": record.as_dict()}) + b"\n"))
        written: list[tuple[str, _Segment, list[int]]] = []
        for municipality, items in lines.items():
            try:
                segment = self._segment(municipality)
                _write_all(segment.fd, b"".join(line for _, line in items))
                segment.size += sum(len(line) for _, line in items)
                written.append((municipality, segment, [i for i, _ in items]))
            except OSError as exc:
                self._abandon(municipality)
                for i, _ in items:
                    outcomes[i] = EAkteError(f"E-Akte store not writable: {exc.strerror or exc}")
        if written:
            if self._sync is None:
                self._sync = ThreadPoolExecutor(1, thread_name_prefix="eakte-sync")
            failures = await asyncio.get_running_loop().run_in_executor(
                self._sync, _make_durable, [segment for _, segment, _ in written])
            for (municipality, segment, indices), failure in zip(written, failures, strict=True):
                if failure is not None:
                    self._abandon(municipality)
                    for i in indices:
                        outcomes[i] = EAkteError(f"E-Akte store not writable: {failure}")
                elif segment.size >= self.SEGMENT_BYTES:
                    self._abandon(municipality)
        for (_, _, future), outcome in zip(group, outcomes, strict=True):
            if future.done():
                continue
            if isinstance(outcome, Exception):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    def _segment(self, municipality: str) -> _Segment:
        segment = self._segments.get(municipality)
        if segment is None:
            folder = self.root / municipality
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"journal-{self._name}-{next(self._numbers):04d}.jsonl"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
            segment = self._segments[municipality] = _Segment(fd, str(folder))
        return segment

    def _abandon(self, municipality: str) -> None:
        segment = self._segments.pop(municipality, None)
        if segment is not None:
            with contextlib.suppress(OSError):
                os.close(segment.fd)

    def close(self) -> None:
        """Close the open segments (a later call starts new ones)."""
        for municipality in list(self._segments):
            self._abandon(municipality)
        if self._sync is not None:
            self._sync.shutdown(wait=True)
            self._sync = None

    def stored(self) -> dict[str, dict[str, Any]]:
        """All filed documents by idempotency key, with their call counts (for operators and tests)."""
        out: dict[str, dict[str, Any]] = {}
        if not self.root.is_dir():
            return out
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir()):
            for path in sorted(folder.glob("*.json")):  # one document per key, as filed by earlier releases
                doc = _read_document(path)
                if doc is not None:
                    out[doc["key"]] = doc
            for path in sorted(folder.glob("journal-*.jsonl")):
                for line in path.read_bytes().split(b"\n")[:-1]:  # a partial last line is not a filing
                    try:
                        entry = orjson.loads(line)
                    except orjson.JSONDecodeError:
                        continue
                    if not isinstance(entry, dict) or not {"key", "reference", "record"} <= entry.keys():
                        continue
                    doc = out.get(entry["key"])
                    if doc is None:
                        out[entry["key"]] = {"key": entry["key"], "reference": entry["reference"], "calls": 1,
                                             "record": entry["record"]}
                    else:
                        doc["calls"] += 1
        return out

    def export_xdomea(self, target: Path) -> int:
        """Write `<target>/<municipality>/<key>.xml` for every filed document; returns how many."""
        count = 0
        for key, doc in sorted(self.stored().items()):
            r = doc["record"]
            record = FilingRecord(**{**r, "filed_at": datetime.fromisoformat(r["filed_at"])})
            safe = key.replace(":", "_").replace("/", "_")
            path = target / record.municipality / f"{safe}.xml"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(xdomea_like(record, key), encoding="utf-8")
            count += 1
        return count


@dataclass
class _Segment:
    """An open journal segment: its descriptor, folder, bytes written, and whether its directory entry is
    durable yet."""

    fd: int
    folder: str
    size: int = 0
    new: bool = True


def _make_durable(segments: list[_Segment]) -> list[str | None]:
    """fdatasync each segment (and its folder once, when the segment is new); the failure per segment, if any."""
    failures: list[str | None] = []
    for segment in segments:
        try:
            os.fdatasync(segment.fd)
            if segment.new:
                fd = os.open(segment.folder, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
                segment.new = False
            failures.append(None)
        except OSError as exc:
            failures.append(exc.strerror or str(exc))
    return failures


def _read_document(path: Path) -> dict[str, Any] | None:
    """A document of the earlier one-file-per-key layout, or None if it is partial (left by a crash)."""
    try:
        doc = json.loads(path.read_bytes())
    except (FileNotFoundError, ValueError):
        return None
    return doc if isinstance(doc, dict) and {"key", "reference", "calls", "record"} <= doc.keys() else None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class HttpEAkte:
    """Adapter for an E-Akte with an HTTP API: `PUT {base}/documents/{key}` with the record; 2xx = filed.

    The server is expected to treat the key as idempotency key (a repeated PUT returns the same reference).
    """

    def __init__(self, base_url: str, token: str | None = None, timeout_s: float = 10.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.AsyncClient(base_url=base_url, timeout=timeout_s, headers=headers)

    async def file(self, key: str, record: FilingRecord) -> str:
        try:
            resp = await self._client.put(f"/documents/{key}", json=record.as_dict(),
                                          headers={"Idempotency-Key": key})
        except httpx.HTTPError as exc:
            raise EAkteError(f"E-Akte unreachable: {type(exc).__name__}") from exc
        if resp.status_code >= 300:
            raise EAkteError(f"E-Akte answered {resp.status_code}")
        body = resp.json()
        return str(body.get("reference", key))

    async def aclose(self) -> None:
        await self._client.aclose()
