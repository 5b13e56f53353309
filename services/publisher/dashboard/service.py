"""What the German dashboard shows: charts with their tables, built from published (perturbed) KPI cells.

No I/O here. Input are the cells the open-data API publishes for one municipality x service (per period and
over the whole range) and the comparison items; output are `Chart`s that the template renders as a table and
that the browser draws from the same numbers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Final, Literal
from urllib.parse import urlencode

from services.publisher.kpis import repository
from services.publisher.kpis import service as kpi_service
from services.publisher.kpis.definitions import FAMILIES, metrics_of
from shared.db import Conn
from shared.reference import Municipality, municipalities, services

Unit = Literal["count", "decimal", "percent", "stars", "seconds"]

PAYMENT_LABELS: Final = {
    "sepa_lastschrift": "SEPA-Lastschrift", "kreditkarte": "Kreditkarte", "paypal": "PayPal",
    "rechnung": "Rechnung", "giropay": "giropay (eingestellt)", "epaybl": "ePayBL", "other": "Sonstige",
}
AUTH_LABELS: Final = {
    "bundid_basis": "BundID Basis", "elster": "ELSTER", "eid": "Online-Ausweis", "eu_id": "EU-ID",
    "other": "Sonstige",
}
LEVEL_LABELS: Final = {"niedrig": "niedrig", "substantiell": "substantiell", "hoch": "hoch"}
COMPARED_LABELS: Final[dict[str, tuple[str, Unit]]] = {
    "sessions_started_per_10k": ("Gestartete Vorgänge je 10.000 Einwohner", "decimal"),
    "conversion_rate": ("Abschlussquote", "percent"),
    "abandonment_rate": ("Abbruchquote", "percent"),
    "mean_stars": ("Mittlere Bewertung (Sterne)", "stars"),
    "duration_p50_s": ("Median der Ausfülldauer", "seconds"),
    "processing_p50_s": ("Median der Bearbeitungsdauer", "seconds"),
}


@dataclass(frozen=True, slots=True)
class Value:
    """One published number; `None` when there is none (a rate without a denominator, an absent cell)."""

    value: float | None

    @property
    def known(self) -> bool:
        return self.value is not None


EMPTY: Final = Value(None)
ZERO: Final = Value(0)


@dataclass(frozen=True, slots=True)
class Series:
    label: str
    values: tuple[Value, ...]


@dataclass(slots=True)
class Chart:
    """One chart: categories on the x axis, one or more series, the unit, the CSV with the same numbers."""

    id: str
    title: str
    kind: Literal["line", "bar"]
    category_label: str
    categories: list[str]
    series: list[Series]
    unit: Unit
    csv_url: str
    note: str = ""
    stacked: bool = False
    horizontal: bool = False
    facts: list[tuple[str, str]] = field(default_factory=list)
    download_label: str = "CSV-Datei mit diesen Werten herunterladen"

    def blank_reason(self) -> str | None:
        """Why the chart has nothing to draw (German), or None when it has; an axis alone never shows."""
        values = [v for s in self.series for v in s.values]
        if any(v.known and v.value for v in values):
            return None
        if any(v.known for v in values):
            return "Im gewählten Zeitraum gab es hierzu keine Fälle."
        return "Für die gewählten Filter liegen keine Daten vor."

    def data(self) -> dict[str, Any]:
        """The numbers for the browser (data island): exactly what the table shows."""
        return {
            "id": self.id, "type": self.kind, "unit": self.unit, "stacked": self.stacked,
            "horizontal": self.horizontal, "labels": self.categories,
            "datasets": [{"label": s.label, "data": [v.value for v in s.values]} for s in self.series],
        }


# --- formatting (German) ----------------------------------------------------------------------------------


def fmt_number(value: float | None, unit: Unit) -> str:
    if value is None:
        return "keine Daten"
    if unit == "percent":
        return f"{value * 100:.1f} %".replace(".", ",")
    if unit in ("stars", "decimal"):
        return f"{value:.2f}".replace(".", ",")
    if unit == "seconds":
        return fmt_duration(value)
    if float(value).is_integer():
        return f"{int(value):,}".replace(",", ".")
    return f"{value:,.2f}".replace(",", "_").replace(".", ",").replace("_", ".")


def _dec(x: float) -> str:
    """German decimal with at most one place: 1 / 1,5."""
    r = round(x, 1)
    return str(int(r)) if r.is_integer() else f"{r:.1f}".replace(".", ",")


def fmt_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{_dec(seconds)} s"
    if seconds < 3600:
        return f"{_dec(seconds / 60)} min"
    if seconds < 86400:
        return f"{_dec(seconds / 3600)} Std."
    days = seconds / 86400
    return f"{_dec(days)} {'Tag' if days == 1 else 'Tage'}"


def fmt_cell(v: Value, unit: Unit) -> str:
    return fmt_number(v.value, unit)


def bucket_label(bound: str) -> str:
    if bound == "inf":
        return "länger"
    return "bis " + fmt_duration(float(bound))


def period_label(period_start: str, period: str) -> str:
    d = datetime.fromisoformat(period_start)
    if period == "month":
        return d.strftime("%m/%Y")
    if period == "hour":
        return d.strftime("%d.%m. %H:00")
    return d.strftime("%d.%m.%Y")


# --- building the charts ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Filters:
    municipality: str | None
    service: str
    period: Literal["day", "month"]
    date_from: date
    date_to: date

    def query(self, **extra: str) -> str:
        params = {"service": self.service, "period": self.period, "from": self.date_from.isoformat(),
                  "to": self.date_to.isoformat()}
        if self.municipality:
            params = {"municipality": self.municipality, **params}
        return urlencode({**params, **extra})


Cell = tuple[str, str, str, str, str, float | int | None, bool]
"""(period_start or '' for the range total, municipality, service, metric, dimension, value, suppressed); the
API's `suppressed` is always false since counts are perturbed instead."""


class CellIndex:
    """Published cells by (period_start, metric, dimension) for one municipality."""

    def __init__(self, cells: Iterable[Cell]) -> None:
        self.cells: dict[tuple[str, str, str], Value] = {}
        for period, _m, _s, metric, dim, value, _suppressed in cells:
            self.cells[(period, metric, dim)] = Value(value)

    def get(self, period: str, metric: str, dim: str = "") -> Value:
        """A derived value (rate, mean, percentile); absent when it cannot be computed."""
        return self.cells.get((period, metric, dim), EMPTY)

    def count(self, period: str, metric: str, dim: str = "") -> Value:
        """A stored count; a cell the API does not list is a zero (no such event)."""
        return self.cells.get((period, metric, dim), ZERO if self.cells else EMPTY)

    def dims(self, period: str, metric: str) -> list[str]:
        return [d for (p, m, d) in self.cells if p == period and m == metric]

    def periods(self) -> list[str]:
        return sorted({p for (p, _, _) in self.cells if p})


def _num_key(d: str) -> tuple[int, float, str]:
    if d == "inf":
        return (0, float("inf"), d)
    try:
        return (0, float(d), d)
    except ValueError:
        return (1, 0.0, d)


def _csv(base: str, family: str, f: Filters, totals: bool = True) -> str:
    """The open-data API's CSV with exactly the numbers of a chart (totals over the range or per period)."""
    return f"{base}/v1/kpis{'/totals' if totals else ''}.csv?{f.query(family=family)}"


def _fact(label: str, v: Value, unit: Unit) -> tuple[str, str]:
    return (label, fmt_cell(v, unit))


def _compare_fact(c: dict[str, Any], name: str) -> tuple[str, str]:
    label, unit = COMPARED_LABELS[c["metric"]]
    own = fmt_number(c["value"], unit)
    hessen = fmt_number(c["hessen"], unit)
    return (f"{label} ({name} / Hessen)", f"{own} / {hessen}")


def municipality_charts(
    per_period: Sequence[Cell], totals: Sequence[Cell], comparison: Sequence[dict[str, Any]], f: Filters,
    base: str, municipality_name: str,
) -> list[Chart]:
    """The charts of a municipality's page for one service."""
    cells = CellIndex(per_period)
    tot = CellIndex(totals)
    charts: list[Chart] = []

    periods = cells.periods()
    usage_metrics = (("sessions_started", "Gestartet"), ("sessions_submitted", "Abgeschlossen"),
                     ("sessions_abandoned", "Abgebrochen"))
    charts.append(Chart(
        id="nutzung", title="Nutzung im Zeitverlauf", kind="line", category_label="Zeitraum",
        categories=[period_label(p, f.period) for p in periods],
        series=[Series(label, tuple(cells.count(p, m) for p in periods)) for m, label in usage_metrics],
        unit="count", csv_url=_csv(base, "funnel", f, totals=False),
        facts=[_fact(label, tot.count("", m), "count") for m, label in usage_metrics]
        + [_fact("Abschlussquote", tot.get("", "conversion_rate"), "percent"),
           _fact("Abbruchquote", tot.get("", "abandonment_rate"), "percent")],
    ))

    steps = sorted(set(tot.dims("", "step_completed")) | set(tot.dims("", "abandoned_after_step")), key=_num_key)
    charts.append(Chart(
        id="trichter", title="Formularschritte und Abbrüche je Schritt", kind="bar",
        category_label="Formularschritt",
        categories=["vor Schritt 1" if s == "0" else f"Schritt {s}" for s in steps],
        series=[
            Series("Schritt erledigt", tuple(tot.count("", "step_completed", s) for s in steps)),
            Series("Abbruch nach diesem Schritt", tuple(tot.count("", "abandoned_after_step", s) for s in steps)),
        ],
        unit="count", csv_url=_csv(base, "funnel", f),
        note="„Abbruch nach diesem Schritt“ zählt Vorgänge, deren zuletzt erledigter Schritt dieser war.",
    ))

    methods = sorted(tot.dims("", "payment"), key=lambda m: PAYMENT_LABELS.get(m, m))
    charts.append(Chart(
        id="zahlarten", title="Zahlarten", kind="bar", category_label="Zahlart",
        categories=[PAYMENT_LABELS.get(m, m) for m in methods],
        series=[Series("Zahlungen", tuple(tot.count("", "payment", m) for m in methods))],
        unit="count", csv_url=_csv(base, "payment", f), horizontal=True,
    ))

    auth_dims = tot.dims("", "auth")
    auth_methods = sorted({d.split(":")[0] for d in auth_dims}, key=lambda m: AUTH_LABELS.get(m, m))
    levels = [lv for lv in LEVEL_LABELS if any(d.endswith(f":{lv}") for d in auth_dims)]
    charts.append(Chart(
        id="anmeldung", title="Authentifizierung nach Verfahren und Vertrauensniveau", kind="bar",
        category_label="Verfahren", categories=[AUTH_LABELS.get(m, m) for m in auth_methods],
        series=[Series(f"Vertrauensniveau {LEVEL_LABELS[lv]}",
                       tuple(tot.count("", "auth", f"{m}:{lv}") for m in auth_methods)) for lv in levels],
        unit="count", csv_url=_csv(base, "auth", f), stacked=True, horizontal=True,
    ))

    stars = ["1", "2", "3", "4", "5"]
    charts.append(Chart(
        id="zufriedenheit", title="Zufriedenheit (Bewertungen nach Sternen)", kind="bar", category_label="Sterne",
        categories=[f"{s} {'Stern' if s == '1' else 'Sterne'}" for s in stars],
        series=[Series("Bewertungen", tuple(tot.count("", "feedback", s) for s in stars))],
        unit="count", csv_url=_csv(base, "feedback", f),
        facts=[_fact("Bewertungen insgesamt", tot.count("", "feedback_count"), "count"),
               _fact("Mittlere Bewertung", tot.get("", "mean_stars"), "stars")],
        note="Freitextkommentare werden nicht veröffentlicht.",
    ))

    durations = sorted(tot.dims("", "duration_le"), key=_num_key)
    charts.append(Chart(
        id="ausfuelldauer", title="Ausfülldauer der Online-Anträge", kind="bar",
        category_label="Dauer vom Start bis zum Absenden", categories=[bucket_label(b) for b in durations],
        series=[Series("Abgeschickte Anträge", tuple(tot.count("", "duration_le", b) for b in durations))],
        unit="count", csv_url=_csv(base, "duration", f),
        facts=[_fact("Median", tot.get("", "duration_p50_s"), "seconds"),
               _fact("90. Perzentil", tot.get("", "duration_p90_s"), "seconds")],
    ))

    buckets = sorted(tot.dims("", "processing_le"), key=_num_key)
    charts.append(Chart(
        id="bearbeitungsdauer", title="Bearbeitungsdauer in der Verwaltung", kind="bar",
        category_label="Bearbeitungsdauer", categories=[bucket_label(b) for b in buckets],
        series=[Series("Abgeschlossene Fälle", tuple(tot.count("", "processing_le", b) for b in buckets))],
        unit="count", csv_url=_csv(base, "processing", f),
        facts=[_fact("Median", tot.get("", "processing_p50_s"), "seconds"),
               _fact("90. Perzentil", tot.get("", "processing_p90_s"), "seconds")],
    ))

    charts.extend(web_usage_charts(tot, f, base))

    rows = [c for c in comparison if c["metric"] in COMPARED_LABELS]
    compare_unit: Unit = "percent"
    rate_rows = [c for c in rows if COMPARED_LABELS[c["metric"]][1] == compare_unit]
    charts.append(Chart(
        id="vergleich", title="Vergleich mit dem Hessen-Durchschnitt", kind="bar", category_label="Kennzahl",
        categories=[COMPARED_LABELS[c["metric"]][0] for c in rate_rows],
        series=[
            Series(municipality_name, tuple(Value(c["value"]) for c in rate_rows)),
            Series("Hessen (alle teilnehmenden Kommunen)", tuple(Value(c["hessen"]) for c in rate_rows)),
            Series("Kommunen gleicher Größenklasse", tuple(Value(c["size_class"]) for c in rate_rows)),
        ],
        unit=compare_unit, csv_url=f"{base}/v1/comparison?{f.query()}",
        download_label="JSON-Datei mit diesen Werten herunterladen",
        facts=[_compare_fact(c, municipality_name) for c in rows if COMPARED_LABELS[c["metric"]][1] != compare_unit],
    ))
    return charts


DEVICE_LABELS: Final = {"desktop": "Desktop", "tablet": "Tablet", "mobile": "Mobilgerät", "other": "unbekannt"}
REFERRER_LABELS: Final = {"search": "Suchmaschine", "social": "soziales Netzwerk",
                          "internal": "eigene Website", "municipal": "andere Verwaltungswebsite",
                          "portal": "Portal oder Website der Verwaltung", "direct": "direkt (ohne Herkunft)",
                          "other": "andere Websites"}
TOP_PAGES = 10


def web_usage_charts(tot: CellIndex, f: Filters, base: str) -> list[Chart]:
    """Web usage of the service's pages: the most viewed pages, and page views per device and referrer class."""
    views = {d: tot.count("", "page_views", d) for d in tot.dims("", "page_views")}
    top = sorted(views, key=lambda d: (-(views[d].value or 0), d))[:TOP_PAGES]
    devices = [d for d in DEVICE_LABELS if d in tot.dims("", "page_views_device")]
    referrers = [r for r in REFERRER_LABELS if r in tot.dims("", "page_views_referrer")]
    return [
        Chart(id="seiten", title=f"Meistbesuchte Seiten (bis zu {TOP_PAGES})", kind="bar", category_label="Seite",
              categories=top, series=[Series("Seitenaufrufe", tuple(views[d] for d in top))],
              unit="count", csv_url=_csv(base, "usage", f), horizontal=True),
        Chart(id="webnutzung", title="Seitenaufrufe nach Gerätetyp und Herkunft", kind="bar",
              category_label="Klasse", categories=[DEVICE_LABELS[d] for d in devices]
              + [REFERRER_LABELS[r] for r in referrers],
              series=[Series("Seitenaufrufe", tuple(tot.count("", "page_views_device", d) for d in devices)
                             + tuple(tot.count("", "page_views_referrer", r) for r in referrers))],
              unit="count", csv_url=_csv(base, "usage", f), horizontal=True,
              note="Gerätetyp aus der Fensterbreite; die Herkunftsseite selbst wird nie gespeichert."),
    ]


def hessen_charts(
    totals_by_municipality: Sequence[tuple[str, str, Sequence[Cell]]], f: Filters, base: str,
) -> list[Chart]:
    """The Hessen overview for one service: each municipality's totals side by side."""
    names = [name for _, name, _ in totals_by_municipality]
    members = ",".join(ags for ags, _, _ in totals_by_municipality)
    f = Filters(members, f.service, f.period, f.date_from, f.date_to)
    idx = [CellIndex(cells) for _, _, cells in totals_by_municipality]
    usage = (("sessions_started", "Gestartet"), ("sessions_submitted", "Abgeschlossen"),
             ("sessions_abandoned", "Abgebrochen"))
    return [
        Chart(
            id="nutzung-kommunen", title="Vorgänge je Kommune", kind="bar", category_label="Kommune",
            categories=names, series=[Series(label, tuple(i.count("", m) for i in idx)) for m, label in usage],
            unit="count", csv_url=_csv(base, "funnel", f),
        ),
        Chart(
            id="quoten-kommunen", title="Abschluss- und Abbruchquote je Kommune", kind="bar",
            category_label="Kommune", categories=names,
            series=[Series("Abschlussquote", tuple(i.get("", "conversion_rate") for i in idx)),
                    Series("Abbruchquote", tuple(i.get("", "abandonment_rate") for i in idx))],
            unit="percent", csv_url=_csv(base, "funnel", f),
        ),
        Chart(
            id="zufriedenheit-kommunen", title="Mittlere Bewertung je Kommune", kind="bar",
            category_label="Kommune", categories=names,
            series=[Series("Mittlere Bewertung (Sterne)", tuple(i.get("", "mean_stars") for i in idx))],
            unit="stars", csv_url=_csv(base, "feedback", f),
        ),
    ]


# --- loading (through the same functions that answer the open-data API) ------------------------------------


@dataclass(slots=True)
class Page:
    title: str
    filters: Filters
    charts: list[Chart]
    services: list[tuple[str, str]]
    has_data: bool


async def _tables(conn: Conn, f: Filters, agss: list[str], service_keys: list[str]) -> list[kpi_service.Table]:
    """Perturbed tables (municipality x service) exactly as the open-data API builds them."""
    q = kpi_service.KpiQuery(
        municipalities=tuple(agss), services=tuple(service_keys), period=f.period, date_from=f.date_from,
        date_to=f.date_to,
    )
    start, end = q.bounds()
    rows = await repository.kpi_rows(conn, f.period, start, end, agss, service_keys)
    return kpi_service.build_tables(rows)


async def busiest_service(conn: Conn, ags: str | None, f: Filters) -> str | None:
    """The service with the most sessions started in the range (the page's default selection)."""
    q = kpi_service.KpiQuery(municipalities=(), services=(), period=f.period, date_from=f.date_from,
                             date_to=f.date_to)
    start, end = q.bounds()
    rows = await repository.kpi_rows(conn, f.period, start, end, [ags] if ags else None, None)
    # ranked by perturbed counts (each service's total is a cell of its own), never by true ones
    raw: dict[str, tuple[int, int]] = {}
    for _muni, svc, _start, metric, _dim, value, key_sum in rows:
        if metric == "sessions_started":
            v, ks = raw.get(svc, (0, 0))
            raw[svc] = (v + value, ks + key_sum)
    started = kpi_service.perturbed(raw)
    return max(started, key=lambda s: (started[s], s)) if started else None


async def municipality_page(conn: Conn, m: Municipality, f: Filters, base: str) -> Page:
    tables = await _tables(conn, f, [x.ags for x in municipalities()], [f.service])
    own = next((t for t in tables if t.municipality == m.ags), None)
    metrics = metrics_of(FAMILIES)
    per_period: list[Cell] = []
    totals: list[Cell] = []
    if own is not None:
        for p in own.periods:
            per_period.extend(kpi_service.table_cells(own, metrics, p))
        totals = kpi_service.table_cells(own, metrics, kpi_service.TOTAL)
    comparison = kpi_service.comparison_items(m, tables, [f.service]) if own is not None else []
    charts = municipality_charts(per_period, totals, comparison, f, base, m.name)
    return Page(title=m.name, filters=f, charts=charts, services=service_options(f.service), has_data=own is not None)


async def hessen_page(conn: Conn, f: Filters, base: str) -> Page:
    tables = await _tables(conn, f, [m.ags for m in municipalities()], [f.service])
    by_ags = {t.municipality: t for t in tables}
    metrics = metrics_of(FAMILIES)
    rows = [
        (m.ags, m.name, kpi_service.table_cells(by_ags[m.ags], metrics, kpi_service.TOTAL) if m.ags in by_ags else [])
        for m in municipalities()
    ]
    return Page(title="Hessen", filters=f, charts=hessen_charts(rows, f, base), services=service_options(f.service),
                has_data=bool(by_ags))


def service_options(selected: str | None = None) -> list[tuple[str, str]]:
    """(LeiKa key, name) of the reference services by name; a selected key outside the table is kept."""
    known = sorted(((s.leika_key, s.name_de) for s in services()), key=lambda s: s[1].casefold())
    if selected and selected not in {key for key, _ in known}:
        known.insert(0, (selected, f"Leistung {selected}"))
    return known


def summary(chart: Chart) -> str:
    """Text alternative of a chart (aria-label): what it shows and, when short, every value."""
    kind = "Liniendiagramm" if chart.kind == "line" else "Balkendiagramm"
    reason = chart.blank_reason()
    if reason is not None:
        return f"{kind}: {chart.title}. {reason}"
    text = f"{kind}: {chart.title}."
    if len(chart.categories) * len(chart.series) <= 24:
        parts = []
        for s in chart.series:
            pairs = zip(chart.categories, s.values, strict=True)
            vals = ", ".join(f"{c} {fmt_cell(v, chart.unit)}" for c, v in pairs)
            parts.append(f"{s.label}: {vals}")
        text += " " + "; ".join(parts) + "."
    else:
        text += f" {len(chart.categories)} Werte von {chart.categories[0]} bis {chart.categories[-1]}."
    return text + " Alle Werte stehen in der Tabelle zum Diagramm."
