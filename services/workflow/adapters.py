"""Ports to the outside world: the clock and the E-Akte (records management), each with its implementations."""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, cast
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
    """Reference adapter: one JSON document per idempotency key; repeated calls only count.

    `<root>/<municipality>/<key>.json` holds the record, the reference and how often it was called;
    `export_xdomea` writes an XDOMEA-style XML (Akte / Vorgang / Dokument) of every filed document.

    Group commit: the calls that arrive while a write is in progress are written together. A new document is
    created under its final name, written and fsync'd, then its directory is fsync'd, before any call of the
    group returns; a document that already exists is replaced atomically (temporary file, fsync, rename,
    directory fsync) with its call count raised. A crash before the fsyncs can leave a partial document: it was
    never reported as filed, so it counts as absent (the next call for the key writes it again).

    The groups are written by worker processes (`writers` of them, started on first use): a file system call
    releases the interpreter lock, and a thread of the busy service process would then wait for it again after
    each of the many small calls of a group, which made filing slower than the disk.
    """

    def __init__(self, root: Path, writers: int = 1) -> None:
        self.root = root
        self.writers = writers
        self._queue: list[tuple[str, FilingRecord, asyncio.Future[str]]] = []
        self._running: set[asyncio.Task[None]] = set()
        self._pool: ProcessPoolExecutor | None = None

    async def file(self, key: str, record: FilingRecord) -> str:
        # Keys are unique per case step and a case is locked while it files, so calls never race on a key.
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._queue.append((key, record, future))
        if len(self._running) < self.writers:  # up to `writers` groups are written at the same time
            self._running.add(asyncio.create_task(self._write_groups()))
        return await asyncio.shield(future)

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.writers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_exit_with_parent, initargs=(os.getpid(),))
        return self._pool

    async def _write_groups(self) -> None:
        try:
            await self._drain_queue()
        finally:
            # Leave the running set in the same step as the last look at the queue: a call queued after that
            # look starts a writer of its own (a done-callback would run later and could strand such a call).
            self._running.discard(cast("asyncio.Task[None]", asyncio.current_task()))

    async def _drain_queue(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            group, self._queue = self._queue, []
            outcomes: list[str | Exception]
            try:
                outcomes = await loop.run_in_executor(self._executor(), file_group, self.root,
                                                      [(k, r) for k, r, _ in group])
            except BrokenProcessPool as exc:  # a writer died; the next group starts fresh ones
                self._pool = None
                outcomes = [EAkteError(f"E-Akte writer stopped: {exc}") for _ in group]
            except Exception as exc:  # the whole group failed (e.g. the sync); each call is retried by its case
                outcomes = [EAkteError(f"E-Akte store not writable: {exc}") for _ in group]
            for (_, _, future), outcome in zip(group, outcomes, strict=True):
                if future.done():
                    continue
                if isinstance(outcome, Exception):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)

    def close(self) -> None:
        """Stop the writer processes (they are started again if the adapter is used afterwards)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def stored(self) -> dict[str, dict[str, Any]]:
        """All filed documents by idempotency key (for operators and tests)."""
        out: dict[str, dict[str, Any]] = {}
        if not self.root.is_dir():
            return out
        for p in self.root.glob("*/*.json"):
            doc = _read_document(p)
            if doc is not None:
                out[doc["key"]] = doc
        return out

    def export_xdomea(self, target: Path) -> int:
        """Write `<target>/<municipality>/<key>.xml` for every filed document; returns how many."""
        count = 0
        for key, doc in sorted(self.stored().items()):
            r = doc["record"]
            record = FilingRecord(**{**r, "filed_at": datetime.fromisoformat(r["filed_at"])})
            path = _document_path(target, key, record.municipality).with_suffix(".xml")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(xdomea_like(record, key), encoding="utf-8")
            count += 1
        return count


def _exit_with_parent(parent: int) -> None:
    """Writer processes end when the service process is gone, even if it was killed (kill -9)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="eakte-parent-watch", daemon=True).start()


def _document_path(root: Path, key: str, municipality: str) -> Path:
    safe = key.replace(":", "_").replace("/", "_")
    return root / municipality / f"{safe}.json"


def _read_document(path: Path) -> dict[str, Any] | None:
    """A stored document, or None if it is absent or partial (left by a crash before it was durable)."""
    try:
        doc = json.loads(path.read_bytes())
    except (FileNotFoundError, ValueError):
        return None
    return doc if isinstance(doc, dict) and "reference" in doc and "calls" in doc else None


def file_group(root: Path, items: list[tuple[str, FilingRecord]]) -> list[str | Exception]:
    """Write one group of filings durably (runs in a writer process); one outcome per item, in order."""
    outcomes: list[str | Exception] = []
    created: list[int] = []  # descriptors of new documents, fsync'd below
    renames: list[tuple[str, Path]] = []
    written: dict[Path, dict[str, Any]] = {}  # documents of this group (a key twice in a group counts twice)
    made: set[Path] = set()
    try:
        for key, record in items:
            path = _document_path(root, key, record.municipality)
            try:
                if path.parent not in made:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    made.add(path.parent)
                stored = written.get(path)
                if stored is None:
                    reference = f"eakte:{record.municipality}:{key}"
                    doc = {"key": key, "reference": reference, "calls": 1, "record": record.as_dict()}
                    try:
                        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                    except FileExistsError:
                        stored = _read_document(path)
                    else:
                        created.append(fd)
                        _write_all(fd, json.dumps(doc, sort_keys=True).encode())
                        written[path] = doc
                        outcomes.append(reference)
                        continue
                    if stored is None:  # a partial document of an attempt that never returned: write it anew
                        stored = {**doc, "calls": 0}
                stored["calls"] += 1
                written[path] = stored
                renames.append((_write_temp(path, json.dumps(stored, sort_keys=True)), path))
                outcomes.append(str(stored["reference"]))
            except OSError as exc:
                outcomes.append(EAkteError(f"E-Akte store not writable: {exc.strerror or exc}"))
        _make_durable([*created, *(tmp for tmp, _ in renames)])
    finally:
        for fd in created:
            os.close(fd)
    for tmp, path in renames:
        os.replace(tmp, path)
    if created or renames:
        _make_durable(sorted({str(path.parent) for path in written}))
    return outcomes


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _write_temp(path: Path, text: str) -> str:
    """Write next to `path` under a temporary name (not yet durable); returns that name."""
    # No .json suffix: a temporary file left by a crash is never taken for a filed document.
    tmp = f"{path.parent}/.tmp-{os.getpid()}-{next(_temp_numbers)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        _write_all(fd, text.encode())
    finally:
        os.close(fd)
    return tmp


_temp_numbers = itertools.count()


# fsyncs of one group run side by side: the file system commits them together (journal group commit).
_SYNC_THREADS = 16


def _fsync(target: str | int) -> None:
    """fsync an open descriptor, or a path (a file or a directory)."""
    if isinstance(target, int):
        os.fsync(target)
        return
    fd = os.open(target, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_durable(targets: list[str | int]) -> None:
    """Make the data of these files (descriptors or paths) or these directories' entries durable: an fsync of
    each, several at a time. Only these are flushed, so the cost does not depend on what else is dirty on the
    disk (a `syncfs` would also write out Kafka's and PostgreSQL's unflushed pages)."""
    if len(targets) <= 1:
        for t in targets:
            _fsync(t)
        return
    list(_sync_pool().map(_fsync, targets))


@functools.cache
def _sync_pool() -> ThreadPoolExecutor:
    """The threads that run the fsyncs of this process (kept: starting threads per group costs more)."""
    return ThreadPoolExecutor(_SYNC_THREADS, thread_name_prefix="eakte-fsync")


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
