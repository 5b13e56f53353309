"""Ports to the outside world: the clock and the E-Akte (records management), each with its implementations."""

from __future__ import annotations

import asyncio
import ctypes
import itertools
import json
import os
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from xml.sax.saxutils import escape

import httpx


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
    """Reference adapter: one JSON + one XDOMEA-style XML file per idempotency key; repeated calls count only.

    `<root>/<municipality>/<key>.json` holds the record, the reference and how often it was called.

    Group commit: the calls that arrive while a write is in progress are written together. Each file is written
    to a temporary name, the data is made durable, the files are renamed into place and the renames are made
    durable before any of the calls returns; on Linux one `syncfs` per stage covers the whole group (elsewhere
    every file and directory is fsync'd).
    """

    def __init__(self, root: Path, writers: int = 4) -> None:
        self.root = root
        self.writers = writers
        self._queue: list[tuple[str, FilingRecord, asyncio.Future[str]]] = []
        self._running: set[asyncio.Task[None]] = set()

    def _path(self, key: str, municipality: str) -> Path:
        safe = key.replace(":", "_").replace("/", "_")
        return self.root / municipality / f"{safe}.json"

    async def file(self, key: str, record: FilingRecord) -> str:
        # Keys are unique per case step and a case is locked while it files, so calls never race on a key.
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._queue.append((key, record, future))
        if len(self._running) < self.writers:  # up to `writers` groups are written at the same time
            task = asyncio.create_task(self._write_groups())
            self._running.add(task)
            task.add_done_callback(self._running.discard)
        return await asyncio.shield(future)

    async def _write_groups(self) -> None:
        while self._queue:
            group, self._queue = self._queue, []
            try:
                outcomes = await asyncio.to_thread(self._file_group, [(k, r) for k, r, _ in group])
            except Exception as exc:  # the whole group failed (e.g. the sync); each call is retried by its case
                outcomes = [EAkteError(f"E-Akte store not writable: {exc}") for _ in group]
            for (_, _, future), outcome in zip(group, outcomes, strict=True):
                if future.done():
                    continue
                if isinstance(outcome, Exception):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)

    def _file_group(self, items: list[tuple[str, FilingRecord]]) -> list[str | Exception]:
        outcomes: list[str | Exception] = []
        renames: list[tuple[str, Path]] = []
        written: dict[Path, dict[str, Any]] = {}  # documents of this group (a key twice in a group counts twice)
        made: set[Path] = set()
        for key, record in items:
            path = self._path(key, record.municipality)
            try:
                if path.parent not in made:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    made.add(path.parent)
                stored = written.get(path)
                if stored is None and path.exists():
                    stored = json.loads(path.read_text())
                if stored is not None:
                    stored["calls"] += 1
                    written[path] = stored
                    renames.append((_write_temp(path, json.dumps(stored, sort_keys=True)), path))
                    outcomes.append(str(stored["reference"]))
                    continue
                reference = f"eakte:{record.municipality}:{key}"
                doc = {"key": key, "reference": reference, "calls": 1, "record": record.as_dict()}
                renames.append((_write_temp(path.with_suffix(".xml"), xdomea_like(record, key)),
                                path.with_suffix(".xml")))
                renames.append((_write_temp(path, json.dumps(doc, sort_keys=True)), path))
                written[path] = doc
                outcomes.append(reference)
            except OSError as exc:
                outcomes.append(EAkteError(f"E-Akte store not writable: {exc.strerror or exc}"))
        if not renames:
            return outcomes
        _make_durable(self.root, [tmp for tmp, _ in renames])
        for tmp, path in renames:
            os.replace(tmp, path)
        _make_durable(self.root, sorted({str(path.parent) for _, path in renames}))
        return outcomes

    def stored(self) -> dict[str, dict[str, Any]]:
        """All filed documents by idempotency key (for operators and tests)."""
        out: dict[str, dict[str, Any]] = {}
        if not self.root.is_dir():
            return out
        for p in self.root.glob("*/*.json"):
            doc = json.loads(p.read_text())
            out[doc["key"]] = doc
        return out


def _write_temp(path: Path, text: str) -> str:
    """Write next to `path` under a temporary name (not yet durable); returns that name."""
    # No .json/.xml suffix: a temporary file left by a crash is never taken for a filed document.
    tmp = f"{path.parent}/.tmp-{os.getpid()}-{next(_temp_numbers)}"
    data = memoryview(text.encode())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        while data:
            data = data[os.write(fd, data):]
    finally:
        os.close(fd)
    return tmp


_temp_numbers = itertools.count()


_libc = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None
_syncfs = getattr(_libc, "syncfs", None)


def _make_durable(root: Path, paths: list[str]) -> None:
    """Make the data of these files (or these directories' entries) durable: one syncfs of the file system
    that holds `root` on Linux, else an fsync of each path."""
    if _syncfs is not None:
        fd = os.open(root, os.O_RDONLY)
        try:
            if _syncfs(fd) != 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err))
        finally:
            os.close(fd)
        return
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


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
