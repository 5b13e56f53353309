"""CSV (RFC 4180) and Frictionless data package representations of KPI results."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from typing import Any, Final

from services.publisher.kpis.definitions import PUBLISHED_METRICS
from shared import ckm

SUPPRESSED: Final = "."
"""How a missing value would appear in CSV (declared as a missing value in the table schema; under the Cell Key
Method no value is withheld)."""

KPI_COLUMNS: Final = ("period", "period_start", "municipality", "service", "metric", "dimension", "value")
TOTAL_COLUMNS: Final = ("from", "to", "period", "municipality", "service", "metric", "dimension", "value")

LICENSE: Final = {
    "name": "dl-by-de/2.0",
    "path": "http://dcat-ap.de/def/licenses/dl-by-de/2.0",
    "title": "Datenlizenz Deutschland - Namensnennung - Version 2.0",
}


def _value(v: float | int | None) -> str:
    if v is None:
        return SUPPRESSED
    return str(v)


def render(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> bytes:
    """UTF-8, comma-separated, CRLF line ends, header row, fields quoted only where needed."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(columns)
    w.writerows(rows)
    return buf.getvalue().encode("utf-8")


def kpi_rows(period: str, cells: Iterable[Sequence[Any]]) -> list[tuple[str, ...]]:
    return [(period, c[0], c[1], c[2], c[3], c[4], _value(c[5])) for c in cells]


def total_rows(date_from: str, date_to: str, period: str, cells: Iterable[Sequence[Any]]) -> list[tuple[str, ...]]:
    return [(date_from, date_to, period, c[1], c[2], c[3], c[4], _value(c[5])) for c in cells]


_VALUE_FIELD: Final = {
    "name": "value", "type": "number",
    "description": (
        f"The KPI value. Counts are perturbed by the Cell Key Method: at most {ckm.MAX_DEVIATION} away from the "
        "true count, 0 stays 0, never negative; rates, means and percentiles are computed from perturbed counts. "
        f"Anzahlen sind mit der Cell-Key-Methode verändert: höchstens {ckm.MAX_DEVIATION} vom wahren Wert entfernt."
    ),
}
_COMMON_FIELDS: Final = [
    {"name": "period", "type": "string", "constraints": {"required": True, "enum": ["hour", "day", "month"]},
     "description": "Granularity of the periods."},
    {"name": "municipality", "type": "string", "constraints": {"required": True, "pattern": "[0-9]{8}"},
     "description": "Amtlicher Gemeindeschlüssel (AGS)."},
    {"name": "service", "type": "string", "constraints": {"required": True, "pattern": "[0-9]{14}"},
     "description": "LeiKa key of the online service."},
    {"name": "metric", "type": "string", "constraints": {"required": True, "enum": list(PUBLISHED_METRICS)},
     "description": "KPI name; see /v1/kpi-definitions."},
    {"name": "dimension", "type": "string",
     "description": "What the metric is split by (payment method, step, bucket bound, ...); empty if nothing."},
]


def kpi_schema() -> dict[str, Any]:
    fields = [
        _COMMON_FIELDS[0],
        {"name": "period_start", "type": "datetime", "constraints": {"required": True},
         "description": "Start of the period in Europe/Berlin, ISO 8601 with UTC offset."},
        *_COMMON_FIELDS[1:], _VALUE_FIELD,
    ]
    return {"fields": fields, "missingValues": [SUPPRESSED],
            "primaryKey": ["period", "period_start", "municipality", "service", "metric", "dimension"]}


def totals_schema() -> dict[str, Any]:
    fields = [
        {"name": "from", "type": "date", "constraints": {"required": True},
         "description": "First day of the range (Europe/Berlin)."},
        {"name": "to", "type": "date", "constraints": {"required": True},
         "description": "Last day of the range (Europe/Berlin), inclusive."},
        *_COMMON_FIELDS, _VALUE_FIELD,
    ]
    return {"fields": fields, "missingValues": [SUPPRESSED],
            "primaryKey": ["from", "to", "period", "municipality", "service", "metric", "dimension"]}


def datapackage(kpis_url: str, totals_url: str) -> dict[str, Any]:
    """Frictionless tabular data package describing the CSV of one query and of its totals."""
    note = f"{ckm.note_en()} Free-text feedback is never published.\n\n{ckm.note_de()}"
    common = {"profile": "tabular-data-resource", "format": "csv", "mediatype": "text/csv", "encoding": "utf-8",
              "dialect": {"delimiter": ",", "header": True, "lineTerminator": "\r\n", "quoteChar": '"'}}
    return {
        "profile": "tabular-data-package",
        "name": "kommunal-pulse-kpis",
        "title": "Kennzahlen der Online-Dienste (Kommunal-Pulse)",
        "description": note,
        "licenses": [LICENSE],
        "perturbation": {k: v for k, v in ckm.description().items() if not k.startswith("note")},
        "resources": [
            {"name": "kpis", "path": kpis_url, "title": "Kennzahlen je Zeitraum", **common, "schema": kpi_schema()},
            {"name": "kpi-totals", "path": totals_url, "title": "Summen über den Zeitraum", **common,
             "schema": totals_schema()},
        ],
    }
