"""German wording of the clerk view: labels for codes, amounts in euro, Berlin local times, history sentences.

Pure functions over plain values; the view hands them audit rows and definitions and renders the result.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from services.workflow.definitions import Definition
from services.workflow.model import CaseState, TaskStatus, TimerKind

BERLIN = ZoneInfo("Europe/Berlin")
NONE = "\N{EN DASH}"  # shown where a value is missing

STATES: dict[str, str] = {
    CaseState.RUNNING: "in automatischer Bearbeitung", CaseState.WAITING: "wartet",
    CaseState.TASK: "bei der Sachbearbeitung", CaseState.RETRYING: "wird wiederholt",
    CaseState.PARKED: "angehalten", CaseState.CLOSED: "abgeschlossen"}
OUTCOMES = {"approved": "genehmigt", "rejected": "abgelehnt", "partially_approved": "teilweise genehmigt",
            "withdrawn": "zurückgenommen", "filed": "erledigt", "acknowledged": "bestätigt",
            "decision": "entschieden"}
DECISIONS = {"approved": "Genehmigen", "rejected": "Ablehnen", "partially_approved": "Teilweise genehmigen",
             "extend": "Fiktionsfrist einmalig verlängern"}
TIMERS: dict[str, str] = {
    TimerKind.DEADLINE: "Frist", TimerKind.REMINDER: "Erinnerung", TimerKind.RETRY: "neuer Versuch",
    TimerKind.TIMER: "Wartezeit", TimerKind.FICTION: "Genehmigungsfiktion",
    TimerKind.FICTION_ALERT: "Warnung vor der Genehmigungsfiktion"}
TASK_STATUS: dict[str, str] = {TaskStatus.OPEN: "offen", TaskStatus.CLAIMED: "übernommen", TaskStatus.DONE: "erledigt",
                               TaskStatus.CANCELLED: "entfallen"}
QUEUES = {
    "allgemein": "Allgemeine Sachbearbeitung", "bauaufsicht": "Bauaufsicht", "parkausweise": "Parkausweise",
    "parkausweise-leitung": "Parkausweise (Leitung)", "gewerbe": "Gewerbeamt", "gewerbe-a": "Gewerbeamt, Team A",
    "gewerbe-b": "Gewerbeamt, Team B", "gewerbe-leitung": "Gewerbeamt (Leitung)", "steueramt": "Steueramt",
    "steueramt-leitung": "Steueramt (Leitung)", "meldewesen": "Meldewesen",
    "meldewesen-leitung": "Meldewesen (Leitung)",
}
DOCUMENTS = {
    "lageplan": "Lageplan", "bauzeichnungen": "Bauzeichnungen", "baubeschreibung": "Baubeschreibung",
    "standsicherheitsnachweis": "Standsicherheitsnachweis", "fahrzeugschein": "Fahrzeugschein",
    "meldebestaetigung": "Meldebestätigung", "ausweisdokument": "Ausweisdokument",
    "wohnungsgeberbestaetigung": "Wohnungsgeberbestätigung",
}
CHANNELS = {"online": "online", "fit_connect": "über FIT-Connect", "paper": "auf Papier", "email": "per E-Mail",
            "other": "auf anderem Weg"}
PAYMENT_METHODS = {"epaybl": "ePayBL", "sepa_lastschrift": "SEPA-Lastschrift", "kreditkarte": "Kreditkarte",
                   "paypal": "PayPal", "rechnung": "Rechnung", "giropay": "giropay", "other": "sonstige Zahlart"}


def euro(cents: Any) -> str:
    """`3000` → `30,00 €` (German grouping and decimal comma, non-breaking space before the sign)."""
    if cents is None or cents == "":
        return NONE
    whole, rest = divmod(int(cents), 100)
    return f"{whole:,}".replace(",", ".") + f",{rest:02d}\u00a0€"


def _moment(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    assert isinstance(moment, datetime)
    return moment.astimezone(BERLIN)


def local_time(value: Any) -> str:
    """A moment as Berlin local time, `03.12.2026, 15:40 Uhr`."""
    moment = _moment(value)
    return NONE if moment is None else moment.strftime("%d.%m.%Y, %H:%M Uhr")


def local_date(value: Any) -> str:
    moment = _moment(value)
    return NONE if moment is None else moment.strftime("%d.%m.%Y")


def duration(seconds: Any) -> str:
    """`266400` → `3 Tage und 2 Stunden` (whole units, at least one minute)."""
    s = int(seconds or 0)
    days, hours, minutes = s // 86400, (s % 86400) // 3600, (s % 3600) // 60

    def unit(n: int, one: str, many: str) -> str:
        return f"{n} {one if n == 1 else many}"

    if days:
        return unit(days, "Tag", "Tage") + (f" und {unit(hours, 'Stunde', 'Stunden')}" if hours else "")
    if hours:
        return unit(hours, "Stunde", "Stunden")
    return unit(max(1, minutes), "Minute", "Minuten")


def queue(name: str | None) -> str:
    if not name:
        return NONE
    return QUEUES.get(name, name.replace("-", " ").replace("_", " ").capitalize())


def documents(codes: list[str] | None) -> str:
    return ", ".join(DOCUMENTS.get(c, c.replace("_", " ").capitalize()) for c in codes or []) or "keine"


def step_title(definition: Definition | None, step: str | None) -> str:
    if not step:
        return NONE
    if definition is not None:
        try:
            return definition.step(step).title
        except KeyError:
            pass
    return step.replace("_", " ").capitalize()


def actor(value: str, me: str | None) -> str:
    """Who did it, in words; people are shown as "Sie" or by their role, never by internal ids."""
    if value == "system":
        return "System"
    if value == "timer":
        return "Fristenüberwachung"
    if value.startswith("event:"):
        return "Antragsverfahren"
    if value.startswith("operator:"):
        return "Betrieb"
    return "Sie" if me is not None and value == me else "Sachbearbeitung"


def _quoted(text: str) -> str:
    return f"„{text}“"


def _reason(detail: dict[str, Any]) -> str:
    reason = detail.get("reason")
    return f" Begründung: {reason}" if reason else ""


def sentence(action: str, detail: dict[str, Any] | None, before: Any, after: Any,
             definition: Definition | None) -> str:
    """One audit row as a German sentence."""
    d = detail or {}
    b = before if isinstance(before, dict) else {}
    a = after if isinstance(after, dict) else {}

    def step(key: str = "step") -> str:
        return _quoted(step_title(definition, d.get(key)))

    match action:
        case "case_opened":
            return "Antrag eingegangen, Vorgang angelegt."
        case "step_entered":
            return f"Schritt {step()} begonnen."
        case "eingangsbestaetigung":
            return f"Eingangsbestätigung versandt; Bearbeitungsfrist bis {local_date(d.get('deadline'))}."
        case "documents_added":
            return f"Unterlagen nachgereicht: {documents(d.get('documents'))}."
        case "payment_received":
            method = PAYMENT_METHODS.get(str(d.get("method")), "")
            return f"Zahlung über {euro(d.get('amount_cents'))} eingegangen" + (f" ({method})." if method else ".")
        case "fee_calculated":
            return f"Gebühr festgesetzt: {euro(d.get('fee_cents'))}; Zahlung angefordert."
        case "task_assigned":
            return f"Aufgabe an die Warteschlange {_quoted(queue(d.get('queue')))} gegeben."
        case "task_claimed":
            return "Aufgabe übernommen."
        case "task_completed":
            decision = OUTCOMES.get(str(d.get("decision")), "verlängert" if d.get("decision") == "extend" else "")
            return f"Entscheidung: {decision or d.get('decision')}.{_reason(d)}"
        case "task_reassigned":
            return (f"Aufgabe von {_quoted(queue(b.get('queue')))} an {_quoted(queue(a.get('queue')))} "
                    f"umverteilt.{_reason(d)}")
        case "task_escalated":
            return f"Frist überschritten: Aufgabe an {_quoted(queue(a.get('queue')))} weitergegeben."
        case "reminder":
            return f"Erinnerung: die Frist für {step()} endet am {local_date(d.get('deadline'))}."
        case "deadline_breached":
            return f"Frist für {step()} abgelaufen."
        case "filed":
            return "In der E-Akte abgelegt" + (f" (Aktenzeichen {d['reference']})." if d.get("reference") else ".")
        case "step_failed":
            return (f"Schritt fehlgeschlagen (Versuch {d.get('attempt')}), neuer Versuch in "
                    f"{duration(d.get('retry_in_s'))}. Fehler: {d.get('error')}")
        case "retry_due":
            return f"Neuer Versuch Nr. {d.get('attempt')}."
        case "case_parked":
            return f"Vorgang nach {d.get('attempts')} Versuchen angehalten. Fehler: {d.get('error')}"
        case "operator_retry":
            return f"Angehaltenen Schritt erneut gestartet.{_reason(d)}"
        case "operator_skip":
            return f"Schritt {step()} übersprungen.{_reason(d)}"
        case "case_closed":
            outcome = OUTCOMES.get(str(d.get("outcome")), str(d.get("outcome")))
            return f"Vorgang abgeschlossen ({outcome}), Bearbeitungsdauer {duration(d.get('processing_time_s'))}."
        case "withdrawn":
            return "Antrag zurückgenommen."
        case "decided_externally":
            return f"Entscheidung aus dem Fachverfahren: {OUTCOMES.get(str(d.get('outcome')), d.get('outcome'))}."
        case "fiction_watch_started":
            return (f"Genehmigungsfiktion tritt am {local_date(d.get('fiction_due'))} ein, wenn bis dahin nicht "
                    "entschieden ist.")
        case "fiction_watch_stopped":
            return "Überwachung der Genehmigungsfiktion beendet."
        case "fiction_alert":
            return f"Warnung: die Genehmigungsfiktion tritt am {local_date(d.get('fiction_due'))} ein."
        case "fiction_extended":
            return f"Fiktionsfrist verlängert bis {local_date(a.get('fiction_due'))}.{_reason(d)}"
        case "genehmigungsfiktion_eingetreten":
            return "Genehmigungsfiktion eingetreten: die Genehmigung gilt als erteilt."
        case "duplicate_submission_ignored":
            return "Doppelt eingereichten Antrag erkannt und nicht erneut angelegt."
        case "event_after_close_ignored":
            return "Nachricht nach Abschluss des Vorgangs erhalten; nichts geändert."
        case "stale_timer_ignored" | "timer_ignored":
            return "Veraltete Frist übergangen."
    return action.replace("_", " ").capitalize() + "."
