"""Validation on write: dataset descriptions and uploaded files, reported as RFC 9457 problem details."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import orjson
from frictionless import Resource
from pydantic import ValidationError

from services.publisher.portal import vocab
from services.publisher.portal.schemas import DatasetIn
from shared.http import PROBLEM_BASE, ProblemError

MAX_REPORTED_ERRORS = 100
GEOJSON_TYPES = {"FeatureCollection", "Feature", "Point", "MultiPoint", "LineString", "MultiLineString", "Polygon",
                 "MultiPolygon", "GeometryCollection"}


def has_nul(*values: object) -> bool:
    """True when any of the (string) values holds a NUL character, which PostgreSQL text cannot store."""
    return any(isinstance(v, str) and "\x00" in v for v in values)


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not part.startswith(("function-after", "function-", "constrained-")):
            out += ("." if out else "") + part
    return out or "body"


def field_errors(exc: ValidationError) -> list[dict[str, str]]:
    """One entry per failing field: its JSON path, a machine code and a sentence."""
    errors = []
    for err in exc.errors(include_url=False):
        msg = str(err["msg"]).removeprefix("Value error, ")
        errors.append({"field": _path(tuple(err["loc"])), "code": str(err["type"]), "detail": msg})
    return errors


def parse_dataset(raw: bytes) -> DatasetIn:
    """Parse and validate a dataset description; a Problem names every invalid field."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ProblemError(400, "Bad Request", f"body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ProblemError(400, "Bad Request", "body must be a JSON object describing one dataset")
    try:
        return DatasetIn.model_validate(data)
    except ValidationError as exc:
        errors = field_errors(exc)
        raise ProblemError(422, "Invalid dataset description",
                           f"{len(errors)} field(s) invalid: {', '.join(e['field'] for e in errors)}",
                           type=PROBLEM_BASE + "invalid-dataset", errors=errors) from exc


@dataclass(frozen=True)
class CheckedFile:
    """An upload that passed every check, ready to be stored."""

    filename: str
    format: str
    media_type: str
    sha256: str
    report: dict[str, Any] | None


def _safe_filename(filename: str) -> str:
    name = PurePosixPath(filename).name
    if name != filename or not name or name.startswith(".") or len(name) > 200 or any(
        c in name for c in '\\"<>|\x00\r\n'
    ):
        raise ProblemError(400, "Bad Request", f"file name {filename!r} is not a plain file name",
                           type=PROBLEM_BASE + "invalid-file",
                           errors=[{"field": "filename", "code": "invalid", "detail": "plain file name expected"}])
    return name


def frictionless_report(body: bytes) -> dict[str, Any]:
    """Validate a CSV with Frictionless (inferred table schema) and keep a compact report."""
    report = Resource(data=body, format="csv", encoding="utf-8").validate()
    errors = [
        {"row": row, "field": fld, "type": typ, "message": msg}
        for row, fld, typ, msg in report.flatten(["rowNumber", "fieldNumber", "type", "message"])
    ]
    task = report.tasks[0] if report.tasks else None
    return {
        "valid": report.valid,
        "errors": errors[:MAX_REPORTED_ERRORS],
        "error_count": len(errors),
        "rows": task.stats.get("rows") if task else None,
        "fields": task.stats.get("fields") if task else None,
        "validator": "frictionless",
    }


def check_file(filename: str, body: bytes, max_bytes: int) -> CheckedFile:
    """Refuse a file that is too large, of an unhosted type or invalid; CSVs get a Frictionless report."""
    name = _safe_filename(filename)
    suffix = PurePosixPath(name).suffix.lower()
    fmt = vocab.UPLOAD_SUFFIXES.get(suffix)
    if fmt is None:
        raise ProblemError(415, "Unsupported Media Type",
                           f"only {', '.join(sorted(vocab.UPLOAD_SUFFIXES))} files can be hosted",
                           type=PROBLEM_BASE + "unsupported-file")
    if len(body) > max_bytes:
        raise ProblemError(413, "Payload Too Large", f"file exceeds {max_bytes} bytes",
                           type=PROBLEM_BASE + "file-too-large")
    if not body:
        raise ProblemError(422, "Invalid file", "the file is empty", type=PROBLEM_BASE + "invalid-file")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProblemError(422, "Invalid file", f"the file is not UTF-8 encoded: {exc}",
                           type=PROBLEM_BASE + "invalid-file") from exc
    report: dict[str, Any] | None = None
    if fmt == "CSV":
        report = frictionless_report(body)
        if not report["valid"]:
            raise ProblemError(422, "Invalid CSV file",
                               f"Frictionless found {report['error_count']} error(s); nothing was published",
                               type=PROBLEM_BASE + "invalid-csv", report=report)
    else:
        try:
            doc = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise ProblemError(422, "Invalid file", f"the file is not valid JSON: {exc}",
                               type=PROBLEM_BASE + "invalid-file") from exc
        if fmt == "GEOJSON" and not (isinstance(doc, dict) and doc.get("type") in GEOJSON_TYPES):
            raise ProblemError(422, "Invalid file", "GeoJSON needs a top-level object with a GeoJSON type (RFC 7946)",
                               type=PROBLEM_BASE + "invalid-file")
    return CheckedFile(name, fmt, vocab.FORMATS[fmt].media_types[0], hashlib.sha256(body).hexdigest(), report)
