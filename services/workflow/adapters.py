"""Ports to the outside world: the clock and the E-Akte (records management), each with its implementations."""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import os
import socket
import struct
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, cast
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
    """Reference adapter: one JSON document per idempotency key; repeated calls only count.

    `<root>/<municipality>/<key>.json` holds the record, the reference and how often it was called;
    `export_xdomea` writes an XDOMEA-style XML (Akte / Vorgang / Dokument) of every filed document.

    Group commit: the calls that arrive while a write is in progress are written together. A new document is
    created under its final name, written and fsync'd, then its directory is fsync'd, before any call of the
    group returns; a document that already exists is replaced atomically (temporary file, fsync, rename,
    directory fsync) with its call count raised. A crash before the fsyncs can leave a partial document: it was
    never reported as filed, so it counts as absent (the next call for the key writes it again).

    The groups are written by writer processes (`writers` of them, started on first use), each reached over a
    socket from the event loop: a file system call releases the interpreter lock, and a thread of the busy
    service process would wait for it again after each of the many small calls of a group (filing became slower
    than the disk); a process pool's helper threads cost the service process about a tenth of its time.
    """

    def __init__(self, root: Path, writers: int = 1) -> None:
        self.root = root
        self.writers = writers
        self._queue: list[tuple[str, FilingRecord, asyncio.Future[str]]] = []
        self._running: set[asyncio.Task[None]] = set()
        self._idle: list[_Writer] = []
        self._all: list[_Writer] = []

    async def file(self, key: str, record: FilingRecord) -> str:
        # Keys are unique per case step and a case is locked while it files, so calls never race on a key.
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._queue.append((key, record, future))
        if len(self._running) < self.writers:  # up to `writers` groups are written at the same time
            self._running.add(asyncio.create_task(self._write_groups()))
        return await asyncio.shield(future)

    def writer_pids(self) -> list[int]:
        """Process ids of the running writer processes (for operators and tests)."""
        return [w.process.pid for w in self._all if w.process.poll() is None]

    async def _write_groups(self) -> None:
        try:
            await self._drain_queue()
        finally:
            # Leave the running set in the same step as the last look at the queue: a call queued after that
            # look starts a writer of its own (a done-callback would run later and could strand such a call).
            self._running.discard(cast("asyncio.Task[None]", asyncio.current_task()))

    async def _drain_queue(self) -> None:
        writer: _Writer | None = None
        try:
            while self._queue:
                group, self._queue = self._queue, []
                outcomes: list[str | Exception]
                try:
                    if writer is None:
                        writer = self._idle.pop() if self._idle else self._start_writer()
                    outcomes = await writer.write(self.root, [(k, r) for k, r, _ in group])
                except _WriterStopped as exc:  # the writer died; the next group starts a fresh one
                    self._discard(writer)
                    writer = None
                    outcomes = [EAkteError(f"E-Akte writer stopped: {exc}") for _ in group]
                except Exception as exc:  # the whole group failed; each call is retried by its case
                    outcomes = [EAkteError(f"E-Akte store not writable: {exc}") for _ in group]
                for (_, _, future), outcome in zip(group, outcomes, strict=True):
                    if future.done():
                        continue
                    if isinstance(outcome, Exception):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)
        except BaseException:  # cancelled mid-group: the writer's reply would be read by the next group
            self._discard(writer)
            raise
        else:
            if writer is not None:
                self._idle.append(writer)

    def _start_writer(self) -> _Writer:
        writer = _Writer.start()
        self._all.append(writer)
        return writer

    def _discard(self, writer: _Writer | None) -> None:
        if writer is not None:
            writer.stop(kill=True)
            if writer in self._all:
                self._all.remove(writer)

    def close(self) -> None:
        """Stop the writer processes (they are started again if the adapter is used afterwards)."""
        for writer in self._all:
            writer.stop()
        self._all, self._idle = [], []

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


class _WriterStopped(RuntimeError):
    """The writer process is gone (or answered nonsense)."""


_HEADER = struct.Struct("!I")


@dataclass
class _Writer:
    """A writer process and the socket to it. The service talks to it from its event loop (no helper threads
    in the service process); the process ends when the socket closes, so also when the service is killed."""

    process: subprocess.Popen[bytes]
    sock: socket.socket

    @classmethod
    def start(cls) -> _Writer:
        ours, theirs = socket.socketpair()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (str(_PROJECT_ROOT), os.environ.get("PYTHONPATH", "")) if p)}
        try:
            process = subprocess.Popen(
                [sys.executable, "-c", "import sys; from services.workflow.adapters import serve_writer; "
                 "serve_writer(int(sys.argv[1]))", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), env=env, stdin=subprocess.DEVNULL)
        finally:
            theirs.close()
        ours.setblocking(False)
        return cls(process, ours)

    async def write(self, root: Path, items: list[tuple[str, FilingRecord]]) -> list[str | Exception]:
        loop = asyncio.get_running_loop()
        body = orjson.dumps({"root": str(root), "items": [(k, r.municipality, r.as_dict()) for k, r in items]})
        try:
            await loop.sock_sendall(self.sock, _HEADER.pack(len(body)) + body)
            (size,) = _HEADER.unpack(await self._read(loop, _HEADER.size))
            replies = orjson.loads(await self._read(loop, size))
        except (OSError, ValueError) as exc:
            raise _WriterStopped(str(exc) or type(exc).__name__) from exc
        if not isinstance(replies, list) or len(replies) != len(items):
            raise _WriterStopped("unexpected reply")
        return [str(r["reference"]) if "reference" in r else EAkteError(str(r["error"])) for r in replies]

    async def _read(self, loop: asyncio.AbstractEventLoop, size: int) -> bytes:
        data = bytearray()
        while len(data) < size:
            chunk = await loop.sock_recv(self.sock, size - len(data))
            if not chunk:
                raise _WriterStopped(f"exit code {self.process.poll()}")
            data += chunk
        return bytes(data)

    def stop(self, kill: bool = False) -> None:
        self.sock.close()  # the process reads end-of-file and exits
        if kill:
            self.process.kill()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


_PROJECT_ROOT = Path(__file__).resolve().parents[2]


def serve_writer(fd: int) -> None:
    """Main loop of a writer process: read a group, write it durably, answer; end when the service is gone."""
    sock = socket.socket(fileno=fd)
    stream = sock.makefile("rb")
    while True:
        header = stream.read(_HEADER.size)
        if len(header) < _HEADER.size:
            return
        (size,) = _HEADER.unpack(header)
        body = stream.read(size)
        if len(body) < size:
            return
        request = orjson.loads(body)
        try:
            outcomes = file_group(Path(request["root"]), [tuple(i) for i in request["items"]])
        except Exception as exc:
            outcomes = [EAkteError(f"E-Akte store not writable: {exc}") for _ in request["items"]]
        reply = orjson.dumps([{"error": str(o)} if isinstance(o, Exception) else {"reference": o} for o in outcomes])
        try:
            sock.sendall(_HEADER.pack(len(reply)) + reply)
        except OSError:
            return


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


def file_group(root: Path, items: list[tuple[str, str, dict[str, Any]]]) -> list[str | Exception]:
    """Write one group of filings (key, municipality, record as JSON) durably (runs in a writer process); one
    outcome per item, in order."""
    outcomes: list[str | Exception] = []
    created: list[int] = []  # descriptors of new documents, fsync'd below
    renames: list[tuple[str, Path]] = []
    written: dict[Path, dict[str, Any]] = {}  # documents of this group (a key twice in a group counts twice)
    made: set[Path] = set()
    try:
        for key, municipality, record in items:
            path = _document_path(root, key, municipality)
            try:
                if path.parent not in made:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    made.add(path.parent)
                stored = written.get(path)
                if stored is None:
                    reference = f"eakte:{municipality}:{key}"
                    doc = {"key": key, "reference": reference, "calls": 1, "record": record}
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
