"""Server-rendered German clerk view: task list and case history (read-only).

Authentication as in the API: the bearer token from an OIDC proxy in front of the service, or (dev/test) a
token pasted into the login form, kept in an HttpOnly cookie.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs
from uuid import UUID
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Header, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from services.workflow import repository
from services.workflow.auth import AuthError, Principal
from shared.reference import municipalities

views = APIRouter(include_in_schema=False)
BERLIN = ZoneInfo("Europe/Berlin")
COOKIE = "kp_token"

STATES = {"running": "in Bearbeitung (automatisch)", "waiting": "wartet", "task": "bei der Sachbearbeitung",
          "retrying": "wird wiederholt", "parked": "angehalten", "closed": "abgeschlossen"}
OUTCOMES = {"approved": "genehmigt", "rejected": "abgelehnt", "partially_approved": "teilweise genehmigt",
            "withdrawn": "zurückgenommen", "filed": "erledigt", "acknowledged": "bestätigt"}
TIMERS = {"deadline": "Frist", "reminder": "Erinnerung", "retry": "Wiederholung", "timer": "Wartezeit",
          "fiction": "Genehmigungsfiktion", "fiction_alert": "Warnung Genehmigungsfiktion"}
ACTIONS = {
    "case_opened": "Vorgang angelegt", "step_entered": "Schritt begonnen",
    "eingangsbestaetigung": "Eingangsbestätigung",
    "documents_added": "Unterlagen nachgereicht", "payment_received": "Zahlung eingegangen",
    "fee_calculated": "Gebühr festgesetzt", "task_assigned": "Aufgabe zugewiesen",
    "task_claimed": "Aufgabe übernommen", "task_completed": "Aufgabe erledigt",
    "task_reassigned": "Aufgabe umverteilt", "task_escalated": "Aufgabe eskaliert",
    "reminder": "Erinnerung", "deadline_breached": "Frist abgelaufen", "filed": "in der E-Akte abgelegt",
    "step_failed": "Schritt fehlgeschlagen", "case_parked": "Vorgang angehalten", "operator_retry": "erneut versucht",
    "operator_skip": "Schritt übersprungen", "case_closed": "Vorgang abgeschlossen", "withdrawn": "zurückgenommen",
    "fiction_watch_started": "Fiktionsfrist läuft", "fiction_watch_stopped": "Fiktionsfrist beendet",
    "fiction_alert": "Warnung: Fiktion naht", "genehmigungsfiktion_eingetreten": "Genehmigungsfiktion eingetreten",
    "fiction_extended": "Fiktionsfrist verlängert", "decided_externally": "Entscheidung aus dem Fachverfahren",
}


def _datum(value: Any) -> str:
    if value is None or value == "":
        return "-"
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return str(moment.astimezone(BERLIN).strftime("%d.%m.%Y %H:%M"))


templates = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                        autoescape=select_autoescape(["html"]))
templates.filters["datum"] = _datum


def _render(name: str, status: int = 200, **context: Any) -> HTMLResponse:
    return HTMLResponse(templates.get_template(name).render(**context), status_code=status)


def _names() -> dict[str, str]:
    return {m.ags: m.name for m in municipalities()}


async def _principal(request: Request, authorization: str | None) -> Principal:
    token = None
    if authorization and authorization.lower().startswith("bearer "):
        token = authorization[7:].strip()
    token = token or request.cookies.get(COOKIE)
    if not token:
        raise AuthError(401, "Bitte melden Sie sich an.")
    principal: Principal = await request.app.state.verifier.verify(token)
    if not principal.roles & {"clerk", "operator"} or not principal.municipalities:
        raise AuthError(403, "Ihr Zugang berechtigt nicht zur Sachbearbeitung.")
    return principal


def _summary(detail: dict[str, Any], before: Any, after: Any) -> str:
    parts = [f"{k}: {v}" for k, v in detail.items() if k not in ("text",) and v not in (None, "", [], {})]
    if before and after:
        parts.append(f"{before} → {after}")
    return "; ".join(parts)[:300]


@views.get("/sachbearbeitung", response_class=HTMLResponse)
async def task_list(request: Request, queue: str | None = None,
                    authorization: Annotated[str | None, Header()] = None) -> Response:
    try:
        who = await _principal(request, authorization)
    except AuthError as exc:
        return _render("anmelden.html", status=exc.status, fehler=exc.detail)
    engine = request.app.state.engine
    async with request.app.state.pool.acquire() as conn:
        rows = await repository.list_tasks(conn, sorted(who.municipalities), queue or None, ["open", "claimed"],
                                           None, 200)
    names, now = _names(), datetime.now(UTC)
    tasks = []
    for r in rows:
        try:
            title = engine.registry.get(r["definition"], r["definition_version"]).step(r["step"]).title
        except KeyError:
            title = r["step"]
        tasks.append({**r, "step_title": title, "municipality_name": names.get(r["municipality"], r["municipality"]),
                      "overdue": r["due_at"] is not None and r["due_at"] < now})
    return _render("aufgaben.html", tasks=tasks, queue=queue, user=who.subject)


@views.get("/sachbearbeitung/vorgaenge/{case_id}", response_class=HTMLResponse)
async def case_page(case_id: UUID, request: Request,
                    authorization: Annotated[str | None, Header()] = None) -> Response:
    try:
        who = await _principal(request, authorization)
    except AuthError as exc:
        return _render("anmelden.html", status=exc.status, fehler=exc.detail)
    engine = request.app.state.engine
    async with request.app.state.pool.acquire() as conn:
        case = await repository.get_case(conn, case_id)
        if case is None or case["municipality"] not in who.municipalities:
            return _render("anmelden.html", status=404, fehler="Vorgang nicht gefunden.", user=who.subject)
        audit = await repository.audit_of(conn, case_id)
        timers = await repository.timers_of(conn, case_id)
    try:
        definition = engine.registry.get(case["definition"], case["definition_version"])
        title, step_title = definition.title, (definition.step(case["current_step"]).title
                                               if case["current_step"] else None)
    except KeyError:
        title, step_title = case["definition"], case["current_step"]
    for a in audit:
        a["summary"] = _summary(a["detail"] or {}, a["before"], a["after"])
    return _render("vorgang.html", case=case, audit=audit, next_timer=timers[0] if timers else None,
                   definition_title=title, step_title=step_title, user=who.subject,
                   municipality_name=_names().get(case["municipality"], case["municipality"]), states=STATES,
                   outcomes=OUTCOMES, timer_names=TIMERS, actions=ACTIONS)


@views.post("/sachbearbeitung/anmelden")
async def login(request: Request) -> Response:
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    token = (form.get("token") or [""])[0].strip()
    try:
        await request.app.state.verifier.verify(token)
    except AuthError as exc:
        return _render("anmelden.html", status=401, fehler=f"Anmeldung fehlgeschlagen: {exc.detail}")
    response = RedirectResponse("/sachbearbeitung", status_code=303)
    response.set_cookie(COOKIE, token, httponly=True, samesite="strict",
                        secure=request.app.state.settings.environment == "production", max_age=8 * 3600)
    return response
