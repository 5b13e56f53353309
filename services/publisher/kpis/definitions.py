"""What every published KPI means: families, kinds, units, German and English text, formulas."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from shared.kpis import METRICS

Family = Literal["usage", "funnel", "payment", "auth", "feedback", "duration", "processing"]
FAMILIES: Final[tuple[Family, ...]] = ("usage", "funnel", "payment", "auth", "feedback", "duration", "processing")
Kind = Literal["count", "rate", "mean", "percentile"]


@dataclass(frozen=True, slots=True)
class KpiDefinition:
    metric: str
    families: tuple[Family, ...]
    kind: Kind
    unit: str
    dimension: str
    label_de: str
    label_en: str
    description_de: str
    description_en: str
    formula: str


def _d(metric: str, families: tuple[Family, ...], kind: Kind, unit: str, label_de: str, label_en: str,
       description_de: str, description_en: str, formula: str) -> KpiDefinition:
    return KpiDefinition(metric, families, kind, unit, METRICS.get(metric, ""), label_de, label_en,
                         description_de, description_en, formula)


DEFINITIONS: Final[tuple[KpiDefinition, ...]] = (
    _d("page_views", ("usage",), "count", "views", "Seitenaufrufe", "Page views",
       "Aufrufe von Seiten des Online-Dienstes, je Seitenpfad.", "Views of the online service's pages, per page path.",
       "count(usage.page.viewed)"),
    _d("page_views_device", ("usage",), "count", "views", "Seitenaufrufe nach Gerätetyp",
       "Page views per device class",
       "Seitenaufrufe je Gerätetyp (aus der Fensterbreite: Desktop, Tablet, Mobilgerät).",
       "Page views per device class (from the viewport width: desktop, tablet, mobile).",
       "count(usage.page.viewed) by device"),
    _d("page_views_referrer", ("usage",), "count", "views", "Seitenaufrufe nach Herkunft",
       "Page views per referrer class",
       "Seitenaufrufe je Herkunftsklasse (Suchmaschine, soziales Netzwerk, eigene Website, andere "
       "Verwaltungswebsite, Verwaltungswebsite ohne Unterscheidung (Meldungen nach Schema 1), direkt, andere); die "
       "Herkunftsseite selbst wird nie gespeichert.",
       "Page views per referrer class (search, social, internal, municipal, portal: a public-administration site "
       "not told apart (schema version 1 reports), direct, other); the referring page itself is never stored.",
       "count(usage.page.viewed) by referrer"),
    _d("sessions_started", ("usage", "funnel"), "count", "sessions", "Gestartete Vorgänge", "Sessions started",
       "Begonnene Antragsvorgänge.", "Application sessions started.", "count(usage.session.started)"),
    _d("channel", ("usage",), "count", "sessions", "Kanal", "Channel",
       "Gestartete Vorgänge nach Kanal (Web, App).", "Sessions started per channel (web, app).",
       "count(usage.session.started) by channel"),
    _d("device", ("usage",), "count", "sessions", "Gerätetyp", "Device class",
       "Gestartete Vorgänge nach Gerätetyp.", "Sessions started per device class.",
       "count(usage.session.started) by device"),
    _d("sessions_submitted", ("funnel", "duration"), "count", "sessions", "Abschlüsse", "Sessions submitted",
       "Abgeschickte Anträge (Abschlüsse).", "Applications submitted.", "count(usage.session.submitted)"),
    _d("sessions_abandoned", ("funnel",), "count", "sessions", "Abbrüche", "Sessions abandoned",
       "Abgebrochene Vorgänge.", "Sessions abandoned.", "count(usage.session.abandoned)"),
    _d("step_completed", ("funnel",), "count", "sessions", "Erledigte Formularschritte", "Form steps completed",
       "Abgeschlossene Formularschritte, je Schrittnummer.", "Completed form steps, per step number.",
       "count(usage.step.completed) by step"),
    _d("abandoned_after_step", ("funnel",), "count", "sessions", "Abbruch nach Schritt", "Abandoned after step",
       "Abbrüche nach dem zuletzt erledigten Schritt (0 = vor dem ersten).",
       "Abandonments by last completed step (0 = before the first).",
       "count(usage.session.abandoned) by last_step"),
    _d("conversion_rate", ("funnel",), "rate", "ratio", "Abschlussquote", "Conversion rate",
       "Abschlüsse je gestartetem Vorgang im selben Zeitraum.", "Submissions per session started in the same period.",
       "sessions_submitted / sessions_started"),
    _d("abandonment_rate", ("funnel",), "rate", "ratio", "Abbruchquote", "Abandonment rate",
       "Abbrüche je gestartetem Vorgang im selben Zeitraum.", "Abandonments per session started in the same period.",
       "sessions_abandoned / sessions_started"),
    _d("payment", ("payment",), "count", "payments", "Zahlungen nach Zahlart", "Payments per method",
       "Abgeschlossene Zahlungen je Zahlart.", "Completed payments per payment method.",
       "count(usage.payment.completed) by method"),
    _d("auth", ("auth",), "count", "authentications", "Authentifizierungen", "Authentications",
       "Erfolgreiche Anmeldungen je Verfahren und Vertrauensniveau (Verfahren:Niveau).",
       "Successful authentications per method and level of assurance (method:level).",
       "count(usage.auth.completed) by method:level"),
    _d("feedback", ("feedback",), "count", "ratings", "Bewertungen nach Sternen", "Ratings per stars",
       "Abgegebene Bewertungen je Sternzahl (1 bis 5). Freitextkommentare werden nie veröffentlicht.",
       "Ratings given per number of stars (1-5). Free-text comments are never published.",
       "count(usage.feedback.given) by stars"),
    _d("feedback_count", ("feedback",), "count", "ratings", "Bewertungen", "Ratings",
       "Anzahl aller Bewertungen.", "Number of all ratings.", "sum(feedback)"),
    _d("mean_stars", ("feedback",), "mean", "stars", "Mittlere Bewertung", "Mean rating",
       "Durchschnittliche Sternzahl.", "Mean number of stars.",
       "sum(stars * feedback[stars]) / sum(feedback)"),
    _d("duration_le", ("duration",), "count", "sessions", "Bearbeitungszeit der Antragstellenden (Klassen)",
       "Completion time (buckets)",
       "Abschlüsse je Klasse der Zeit vom Start bis zum Absenden; Dimension = Obergrenze in Sekunden (inf = darüber).",
       "Submissions per bucket of time from start to submission; dimension = upper bound in seconds (inf = above).",
       "count(usage.session.submitted) by bucket(duration_s)"),
    _d("duration_p50_s", ("duration",), "percentile", "seconds", "Median der Ausfülldauer", "Median completion time",
       "Median der Zeit vom Start bis zum Absenden, linear interpoliert innerhalb der festen Klassen.",
       "Median time from start to submission, interpolated linearly within the fixed buckets.",
       "lower + (upper - lower) * (0.5 * n - below) / in_bucket"),
    _d("duration_p90_s", ("duration",), "percentile", "seconds", "90. Perzentil der Ausfülldauer",
       "90th percentile of completion time",
       "90. Perzentil der Zeit vom Start bis zum Absenden, linear interpoliert innerhalb der festen Klassen.",
       "90th percentile of the time from start to submission, interpolated linearly within the fixed buckets.",
       "lower + (upper - lower) * (0.9 * n - below) / in_bucket"),
    _d("cases_opened", ("processing",), "count", "cases", "Eröffnete Fälle", "Cases opened",
       "In der Fachverwaltung eröffnete Fälle.", "Cases opened in the specialist office.",
       "count(workflow.case.opened)"),
    _d("cases_closed", ("processing",), "count", "cases", "Abgeschlossene Fälle", "Cases closed",
       "Abgeschlossene Fälle je Ergebnis.", "Cases closed per outcome.", "count(workflow.case.closed) by outcome"),
    _d("cases_parked", ("processing",), "count", "cases", "Angehaltene Fälle", "Cases parked",
       "Fälle, die nach Fehlversuchen angehalten wurden.", "Cases parked after failed retries.",
       "count(workflow.case.parked)"),
    _d("deadline_breached", ("processing",), "count", "cases", "Fristüberschreitungen", "Deadline breaches",
       "Überschrittene Fristen je Fristart.", "Deadlines breached per deadline name.",
       "count(workflow.deadline.breached) by deadline"),
    _d("processing_le", ("processing",), "count", "cases", "Bearbeitungsdauer (Klassen)", "Processing time (buckets)",
       "Abgeschlossene Fälle je Klasse der Bearbeitungsdauer; Dimension = Obergrenze in Sekunden (inf = darüber).",
       "Closed cases per processing-time bucket; dimension = upper bound in seconds (inf = above).",
       "count(workflow.case.closed) by bucket(processing_s)"),
    _d("processing_p50_s", ("processing",), "percentile", "seconds", "Median der Bearbeitungsdauer",
       "Median processing time",
       "Median der Bearbeitungsdauer, linear interpoliert innerhalb der festen Klassen.",
       "Median processing time, interpolated linearly within the fixed buckets.",
       "lower + (upper - lower) * (0.5 * n - below) / in_bucket"),
    _d("processing_p90_s", ("processing",), "percentile", "seconds", "90. Perzentil der Bearbeitungsdauer",
       "90th percentile of processing time",
       "90. Perzentil der Bearbeitungsdauer, linear interpoliert innerhalb der festen Klassen.",
       "90th percentile of processing time, interpolated linearly within the fixed buckets.",
       "lower + (upper - lower) * (0.9 * n - below) / in_bucket"),
)

PUBLISHED_METRICS: Final = tuple(d.metric for d in DEFINITIONS)
METRIC_ORDER: Final = {m: i for i, m in enumerate(PUBLISHED_METRICS)}
STORED_COUNTS: Final = frozenset(d.metric for d in DEFINITIONS if d.kind == "count" and d.metric in METRICS)


def metrics_of(families: tuple[Family, ...]) -> frozenset[str]:
    return frozenset(d.metric for d in DEFINITIONS if set(d.families) & set(families))
