"""Ports to the outside world: the clock and the E-Akte (records management), each with its implementations."""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
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
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str, municipality: str) -> Path:
        safe = key.replace(":", "_").replace("/", "_")
        return self.root / municipality / f"{safe}.json"

    async def file(self, key: str, record: FilingRecord) -> str:
        # Keys are unique per case step and a case is locked while it files, so calls never race on a key.
        return await asyncio.to_thread(self._file_sync, key, record)

    def _file_sync(self, key: str, record: FilingRecord) -> str:
        path = self._path(key, record.municipality)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.exists():
                stored = json.loads(path.read_text())
                stored["calls"] += 1
                _atomic_write(path, json.dumps(stored, sort_keys=True))
                return str(stored["reference"])
            reference = f"eakte:{record.municipality}:{key}"
            _atomic_write(path.with_suffix(".xml"), xdomea_like(record, key))
            _atomic_write(path, json.dumps(
                {"key": key, "reference": reference, "calls": 1, "record": record.as_dict()}, sort_keys=True))
            return reference
        except OSError as exc:
            raise EAkteError(f"E-Akte store not writable: {exc.strerror or exc}") from exc

    def stored(self) -> dict[str, dict[str, Any]]:
        """All filed documents by idempotency key (for operators and tests)."""
        out: dict[str, dict[str, Any]] = {}
        if not self.root.is_dir():
            return out
        for p in self.root.glob("*/*.json"):
            doc = json.loads(p.read_text())
            out[doc["key"]] = doc
        return out


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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
