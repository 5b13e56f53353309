"""Data portal logic: registry with history, scoped write access, hosted files, search."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

from services.publisher.portal import repository, vocab
from services.publisher.portal.repository import DatasetRow, SearchQuery
from services.publisher.portal.schemas import (
    Agent,
    Dataset,
    DatasetIn,
    DatasetVersion,
    Distribution,
    FacetItem,
    History,
    SearchResult,
    UploadResult,
)
from services.publisher.portal.validation import check_file
from shared.db import Conn
from shared.http import PROBLEM_BASE, ProblemError
from shared.reference import municipality_by_ags

KEY_PREFIX = "kpp_"
RESERVED_PREFIXES = ("kpi-",)  # names the KPI datasets use in the catalog


@dataclass(frozen=True, slots=True)
class Officer:
    """A data officer's key: who wrote (for the history) and for which municipalities."""

    label: str
    municipalities: frozenset[str]


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    """A fresh random key; only its hash is stored."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


async def issue_key(conn: Conn, label: str, municipalities: list[str]) -> str:
    unknown = [m for m in municipalities if m not in municipality_by_ags()]
    if unknown or not municipalities:
        raise ValueError(f"unknown or missing municipality keys: {unknown}")
    key = new_key()
    await repository.insert_key(conn, hash_key(key), label, sorted(set(municipalities)))
    return key


def bearer_key(authorization: str | None, api_key: str | None) -> str | None:
    if api_key:
        return api_key.strip()
    if authorization and authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    return None


async def authenticate(conn: Conn, key: str | None) -> Officer:
    if not key:
        raise ProblemError(401, "Unauthorized", "an API key is required (Authorization: Bearer <key>)",
                           type=PROBLEM_BASE + "unauthorized")
    row = await repository.key_scope(conn, hash_key(key))
    if row is None:
        raise ProblemError(401, "Unauthorized", "unknown or revoked API key", type=PROBLEM_BASE + "unauthorized")
    return Officer(label=row["label"], municipalities=frozenset(m.strip() for m in row["municipalities"]))


def _authorize(officer: Officer, municipality: str) -> None:
    if municipality not in officer.municipalities:
        raise ProblemError(403, "Forbidden", f"this key may not write datasets of municipality {municipality}",
                           type=PROBLEM_BASE + "forbidden")


# --- documents ------------------------------------------------------------------------------------------------


def _link_distributions(ds: DatasetIn) -> list[dict[str, Any]]:
    return [
        {**d.model_dump(mode="json", exclude_none=True), "id": str(uuid.uuid5(uuid.NAMESPACE_URL, d.access_url))}
        for d in ds.distributions
    ]


def _document(ds: DatasetIn, hosted: list[dict[str, Any]]) -> dict[str, Any]:
    m = municipality_by_ags()[ds.municipality]
    doc = ds.model_dump(mode="json", exclude={"distributions"}, exclude_none=True)
    doc["publisher"] = (ds.publisher or Agent(name=m.name)).model_dump(mode="json", exclude_none=True)
    doc["spatial"] = m.political_geocoding_uri
    doc["distributions"] = _link_distributions(ds) + hosted
    return doc


def _formats(doc: dict[str, Any]) -> list[str]:
    return sorted({d["format"] for d in doc["distributions"]})


def _row(d_id: uuid.UUID, doc: dict[str, Any], status: str, version: int, created: datetime,
         modified: datetime) -> DatasetRow:
    return DatasetRow(
        id=d_id, name=doc["name"], municipality=doc["municipality"], status=status, version=version,
        title=doc["title"], description=doc["description"], keywords=doc["keywords"], themes=doc["themes"],
        licence=doc["licence"], formats=_formats(doc), document=doc, created_at=created, modified_at=modified,
    )


def file_path(file_id: str, filename: str) -> str:
    return f"/portal/files/{file_id}/{quote(filename)}"


def to_dataset(r: Any, base_url: str) -> Dataset:
    """A stored row as published: hosted files get their absolute download URL."""
    doc = repository.loads(r["document"])
    dists = []
    for d in doc["distributions"]:
        d = {**d, "licence": d.get("licence") or doc["licence"]}
        if "file" in d:
            url = base_url + file_path(d["file"]["id"], d["file"]["filename"])
            d.setdefault("access_url", url)
            d.setdefault("download_url", url)
        dists.append(Distribution.model_validate(d))
    return Dataset(
        id=str(r["id"]), name=r["name"], municipality=r["municipality"], status=r["status"], version=r["version"],
        title=doc["title"], description=doc["description"], keywords=doc["keywords"], themes=doc["themes"],
        licence=doc["licence"], publisher=doc["publisher"], contact_point=doc["contact_point"],
        spatial=doc["spatial"], temporal=doc.get("temporal"), frequency=doc["frequency"],
        landing_page=doc.get("landing_page"), distributions=dists, created=r["created_at"],
        modified=r["modified_at"],
    )


# --- registry -------------------------------------------------------------------------------------------------


async def create(conn: Conn, officer: Officer, ds: DatasetIn, now: datetime, base_url: str) -> Dataset:
    """Register a new dataset (published at once) and record version 1."""
    _authorize(officer, ds.municipality)
    if ds.name.startswith(RESERVED_PREFIXES):
        raise ProblemError(422, "Invalid dataset description", "name uses a reserved prefix",
                           type=PROBLEM_BASE + "invalid-dataset",
                           errors=[{"field": "name", "code": "reserved",
                                    "detail": f"names starting with {', '.join(RESERVED_PREFIXES)} are reserved"}])
    doc = _document(ds, [])
    row = _row(uuid.uuid4(), doc, "published", 1, now, now)
    if not await repository.insert_dataset(conn, row):
        raise ProblemError(409, "Conflict", f"a dataset named {ds.name!r} already exists",
                           type=PROBLEM_BASE + "name-taken")
    await repository.insert_version(conn, row.id, 1, "published", "created", doc, officer.label, now)
    stored = await repository.get_dataset(conn, ds.name)
    return to_dataset(stored, base_url)


async def _owned(conn: Conn, officer: Officer, name: str) -> Any:
    current = await repository.get_dataset(conn, name, for_update=True)
    if current is None:
        raise ProblemError(404, "Not Found", f"no dataset named {name!r}", type=PROBLEM_BASE + "not-found")
    _authorize(officer, current["municipality"].strip())
    return current


async def update(conn: Conn, officer: Officer, name: str, ds: DatasetIn, now: datetime, base_url: str) -> Dataset:
    """Replace the description; hosted files stay. A withdrawn dataset is published again by an update."""
    if ds.name != name:
        raise ProblemError(422, "Invalid dataset description", "the name in the body differs from the URL",
                           type=PROBLEM_BASE + "invalid-dataset",
                           errors=[{"field": "name", "code": "mismatch", "detail": f"expected {name!r}"}])
    current = await _owned(conn, officer, name)
    _authorize(officer, ds.municipality)
    old = repository.loads(current["document"])
    doc = _document(ds, [d for d in old["distributions"] if "file" in d])
    version = current["version"] + 1
    await repository.update_dataset(conn, _row(current["id"], doc, "published", version, current["created_at"], now))
    await repository.insert_version(conn, current["id"], version, "published", "updated", doc, officer.label, now)
    return to_dataset(await repository.get_dataset(conn, name), base_url)


async def withdraw(conn: Conn, officer: Officer, name: str, now: datetime, base_url: str) -> Dataset:
    """Take a dataset out of catalog, search and CKAN API; it stays in the history."""
    current = await _owned(conn, officer, name)
    if current["status"] == "withdrawn":
        return to_dataset(current, base_url)
    doc = repository.loads(current["document"])
    version = current["version"] + 1
    await repository.update_dataset(conn, _row(current["id"], doc, "withdrawn", version, current["created_at"], now))
    await repository.insert_version(conn, current["id"], version, "withdrawn", "withdrawn", doc, officer.label, now)
    return to_dataset(await repository.get_dataset(conn, name), base_url)


async def add_file(
    conn: Conn, officer: Officer, name: str, filename: str, body: bytes, title: str | None, max_bytes: int,
    now: datetime, base_url: str,
) -> UploadResult:
    """Check an upload and, only if it passes, store it and publish it as a new distribution in one step."""
    current = await _owned(conn, officer, name)
    if current["status"] != "published":
        raise ProblemError(409, "Conflict", "the dataset is withdrawn; update it first",
                           type=PROBLEM_BASE + "withdrawn")
    # Frictionless is synchronous and CPU-bound: keep the event loop free.
    checked = await asyncio.to_thread(check_file, filename, body, max_bytes)
    file_id = uuid.uuid4()
    doc = repository.loads(current["document"])
    dist = {
        "id": str(file_id), "title": title or f"{doc['title']} ({vocab.format_label(checked.format)})",
        "format": checked.format, "media_type": checked.media_type,
        "file": {"id": str(file_id), "filename": checked.filename, "byte_size": len(body), "sha256": checked.sha256},
    }
    doc["distributions"] = [*doc["distributions"], dist]
    await repository.insert_file(conn, file_id, current["id"], checked.filename, checked.format, checked.media_type,
                                 body, checked.sha256, checked.report)
    version = current["version"] + 1
    await repository.update_dataset(conn, _row(current["id"], doc, "published", version, current["created_at"], now))
    await repository.insert_version(conn, current["id"], version, "published", "file_added", doc, officer.label, now)
    dataset = to_dataset(await repository.get_dataset(conn, name), base_url)
    published = next(d for d in dataset.distributions if d.id == str(file_id))
    return UploadResult(dataset=dataset, distribution=published, report=checked.report)


async def get(conn: Conn, name: str, base_url: str) -> Dataset:
    row = await repository.get_dataset(conn, name)
    if row is None:
        raise ProblemError(404, "Not Found", f"no dataset named {name!r}", type=PROBLEM_BASE + "not-found")
    if row["status"] != "published":
        raise ProblemError(410, "Gone", f"dataset {name!r} was withdrawn; its history stays available",
                           type=PROBLEM_BASE + "withdrawn")
    return to_dataset(row, base_url)


async def history(conn: Conn, name: str) -> History:
    row = await repository.get_dataset(conn, name)
    if row is None:
        raise ProblemError(404, "Not Found", f"no dataset named {name!r}", type=PROBLEM_BASE + "not-found")
    versions = [
        DatasetVersion(version=v["version"], status=v["status"], action=v["action"], changed_by=v["changed_by"],
                       changed_at=v["changed_at"], document=repository.loads(v["document"]))
        for v in await repository.history(conn, row["id"])
    ]
    return History(name=name, versions=versions)


# --- files ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HostedContent:
    filename: str
    media_type: str
    etag: str
    content: bytes | None


def etag_of(sha256: str) -> str:
    return f'"{sha256}"'


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    tags = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
    return "*" in tags or etag in tags


async def hosted_file(conn: Conn, file_id: str, filename: str, if_none_match: str | None) -> HostedContent:
    """A hosted file; content is None when the client's copy is current (304)."""
    try:
        fid = uuid.UUID(file_id)
    except ValueError as exc:
        raise ProblemError(404, "Not Found", "no such file", type=PROBLEM_BASE + "not-found") from exc
    head = await repository.published_file(conn, fid, with_content=False)
    if head is None or head["filename"] != filename:
        raise ProblemError(404, "Not Found", "no such file (or its dataset was withdrawn)",
                           type=PROBLEM_BASE + "not-found")
    etag = etag_of(head["sha256"])
    media = head["media_type"] + ("; charset=utf-8" if head["format"] == "CSV" else "")
    if etag_matches(if_none_match, etag):
        return HostedContent(head["filename"], media, etag, None)
    full = await repository.published_file(conn, fid)
    assert full is not None
    return HostedContent(full["filename"], media, etag, bytes(full["content"]))


@dataclass(frozen=True, slots=True)
class Preview:
    header: list[str]
    rows: list[list[str]]
    report: dict[str, Any] | None


async def csv_preview(conn: Conn, file_id: str, max_rows: int = 10, max_bytes: int = 64 * 1024) -> Preview | None:
    """The first rows of a hosted CSV (read from the first bytes only)."""
    row = await repository.file_head(conn, uuid.UUID(file_id), max_bytes)
    if row is None:
        return None
    text = bytes(row["head"]).decode("utf-8", errors="ignore")
    if row["byte_size"] > max_bytes:
        text = text.rsplit("\n", 1)[0]  # drop a row cut off by the byte limit
    header, rows = preview_rows(text, max_rows)
    return Preview(header=header, rows=rows, report=repository.loads(row["report"]))


def preview_rows(text: str, max_rows: int) -> tuple[list[str], list[list[str]]]:
    """Header and first rows of CSV text; the delimiter is sniffed (German CSVs often use `;`)."""
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(text[:8192], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(io.StringIO(text), dialect)
    rows = [r for _, r in zip(range(max_rows + 1), reader, strict=False)]
    return (rows[0] if rows else []), rows[1:]


# --- search ---------------------------------------------------------------------------------------------------

FACETS = ("municipality", "theme", "format", "licence", "keyword")


def facet_label(facet: str, value: str) -> str:
    if facet == "municipality":
        m = municipality_by_ags().get(value.strip())
        return m.name if m else value
    if facet == "theme":
        return vocab.THEMES.get(value, value)
    if facet == "licence":
        return vocab.LICENCES.get(value, value)
    if facet == "format":
        return vocab.format_label(value)
    return value


async def search_window(
    conn: Conn, q: SearchQuery, limit: int, offset: int, base_url: str, with_facets: bool = True
) -> tuple[int, list[Dataset], dict[str, list[FacetItem]]]:
    """Matches from `offset` on, the total and (optionally) the facet counts over all matches."""
    grouped: dict[str, list[FacetItem]] = {f: [] for f in FACETS}
    if not with_facets:
        total, rows = await repository.search(conn, q, limit, offset)
        return total, [to_dataset(r, base_url) for r in rows], grouped
    total, rows, facets = await repository.search_with_facets(conn, q, limit, offset)
    for facet, raw, n in facets:
        value = raw.strip()
        grouped[facet].append(FacetItem(value=value, label=facet_label(facet, value), count=n))
    return total, [to_dataset(r, base_url) for r in rows], grouped


async def search(conn: Conn, q: SearchQuery, page: int, size: int, base_url: str) -> SearchResult:
    total, results, grouped = await search_window(conn, q, size, (page - 1) * size, base_url)
    return SearchResult(count=total, page=page, size=size, results=results, facets=grouped)


# --- Frictionless data packages -------------------------------------------------------------------------------

DATA_PACKAGE_PROFILE = "data-package"
SCHEMA_SAMPLE_BYTES = 64 * 1024


def _resource_name(filename: str) -> str:
    """A Data Package resource name (lower case, `-a-z0-9._`) from a file name."""
    name = "".join(ch if ch.isascii() and (ch.isalnum() or ch in "-._") else "-" for ch in filename.lower())
    return name.strip("-") or "datei"


def table_schema(head: bytes) -> dict[str, Any]:
    """The Table Schema of a CSV, inferred by Frictionless from its first bytes."""
    from frictionless import Resource

    resource = Resource(data=head, format="csv", encoding="utf-8")
    resource.infer()
    schema: dict[str, Any] = resource.schema.to_descriptor()
    return schema


async def data_package(conn: Conn, name: str, base_url: str) -> dict[str, Any]:
    """The Frictionless Data Package of a published dataset's hosted files (CSVs with their Table Schema)."""
    d = await get(conn, name, base_url)
    hosted = [r for r in d.distributions if r.file is not None]
    if not hosted:
        raise ProblemError(404, "Not Found", f"dataset {name!r} has no files hosted by the portal",
                           type=PROBLEM_BASE + "not-found")
    resources: list[dict[str, Any]] = []
    seen: set[str] = set()
    for r in hosted:
        assert r.file is not None
        rname = _resource_name(r.file.filename)
        rname = rname if rname not in seen else f"{rname}-{r.file.id[:8]}"
        seen.add(rname)
        resource: dict[str, Any] = {
            "name": rname, "path": r.download_url, "title": r.title or r.file.filename,
            "format": r.file.filename.rsplit(".", 1)[-1].lower(),
            "mediatype": r.media_type, "encoding": "utf-8", "bytes": r.file.byte_size,
            "hash": f"sha256:{r.file.sha256}",
            "licenses": [{"path": r.licence, "title": vocab.LICENCES.get(r.licence, r.licence)}],
        }
        if r.format == "CSV":
            row = await repository.file_head(conn, uuid.UUID(r.file.id), SCHEMA_SAMPLE_BYTES)
            if row is not None:
                head = bytes(row["head"])
                if row["byte_size"] > SCHEMA_SAMPLE_BYTES:
                    head = head.rsplit(b"\n", 1)[0]  # drop a row cut off by the sample limit
                resource["profile"] = "tabular-data-resource"
                resource["schema"] = await asyncio.to_thread(table_schema, head)
        resources.append(resource)
    publisher = {"title": d.publisher.name, "role": "publisher"}
    if d.publisher.url:
        publisher["path"] = d.publisher.url
    return {
        "profile": DATA_PACKAGE_PROFILE, "name": d.name, "id": f"{base_url}/catalog/datasets/{d.name}",
        "title": d.title, "description": d.description, "keywords": d.keywords, "version": f"{d.version}.0.0",
        "created": d.created.isoformat(), "homepage": d.landing_page or f"{base_url}/portal/datensaetze/{d.name}",
        "licenses": [{"path": d.licence, "title": vocab.LICENCES.get(d.licence, d.licence)}],
        "contributors": [publisher],
        "resources": resources,
    }
