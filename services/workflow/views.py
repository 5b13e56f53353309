"""Server-rendered German clerk view: sign-in by OIDC, task list with filters and paging, case page with the
history in sentences, claim and decide.

Sign-in: Authorization Code + PKCE at the configured issuer, then a server-side session (see `sessions`).
A bearer token in the `Authorization` header (an OIDC proxy in front, or an API client) is accepted as well;
forms posted with a session cookie must carry the session's CSRF token.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import parse_qs, urlencode
from uuid import UUID

from fastapi import APIRouter, Header, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from services.workflow import labels, repository, sessions
from services.workflow.auth import AuthError, Principal
from services.workflow.definitions import Definition, HumanStep
from services.workflow.model import Task
from services.workflow.oidc import OidcError
from services.workflow.service import Engine, NotFound, WorkflowError
from services.workflow.sessions import LOGIN_COOKIE, SESSION_COOKIE
from services.workflow.unit_of_work import PostgresUnitOfWork
from shared.db import Conn
from shared.events.text import refused_character
from shared.reference import municipalities

log = logging.getLogger(__name__)
T = TypeVar("T")
views = APIRouter(include_in_schema=False)
BASE = "/sachbearbeitung"
PAGE_SIZE = 20
STATUS_FILTERS = {"alle": ("alle offenen", ["open", "claimed"]), "offen": ("noch nicht übernommen", ["open"]),
                  "meine": ("von mir übernommen", ["claimed"]), "uebernommen": ("übernommen", ["claimed"])}
NOTICES = {"uebernommen": "Sie haben die Aufgabe übernommen.", "erledigt": "Ihre Entscheidung ist gespeichert.",
           "umverteilt": "Die Aufgabe ist umverteilt.",
           "abgelaufen": "Ihre Sitzung ist abgelaufen. Bitte melden Sie sich erneut an."}
SECURITY_HEADERS = {"Cache-Control": "no-store", "X-Frame-Options": "DENY", "Referrer-Policy": "same-origin",
                    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; "
                                               "frame-ancestors 'none'"}

templates = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                        autoescape=select_autoescape(["html"]))
templates.filters.update(zeit=labels.local_time, datum=labels.local_date, euro=labels.euro, queue=labels.queue,
                         dokumente=labels.documents)


@dataclass(frozen=True)
class Viewer:
    """Who looks at the page: from a session (with its CSRF token) or from a bearer token (no cookie, no CSRF)."""

    principal: Principal
    name: str
    csrf: str | None

    @property
    def may_decide(self) -> bool:
        return "clerk" in self.principal.roles

    @property
    def may_reassign(self) -> bool:
        return "team_lead" in self.principal.roles


def _render(name: str, status: int = 200, **context: Any) -> HTMLResponse:
    return HTMLResponse(templates.get_template(name).render(**context), status_code=status, headers=SECURITY_HEADERS)


def _names() -> dict[str, str]:
    return {m.ags: m.name for m in municipalities()}


def _now() -> datetime:
    return datetime.now(UTC)


def _login_page(request: Request, status: int, message: str | None = None) -> HTMLResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    configured = request.app.state.discovery.configured
    return _render("anmelden.html", status=status, fehler=message, eingerichtet=configured,
                   anmelden=f"{BASE}/anmelden?{urlencode({'ziel': sessions.safe_return_path(target)})}")


async def _viewer(request: Request, authorization: str | None) -> Viewer | None:
    """The signed-in user, None without credentials; AuthError for a bad token or missing rights.

    The clerk view's pages check the sign-in before they take a connection (so they acquire their own instead
    of using `shared.http.Connection`): a stranger's request never holds one of the pool's connections, and the
    sign-in routes never hold one while they wait on the identity provider.
    """
    viewer: Viewer
    if authorization and authorization.lower().startswith("bearer "):
        principal: Principal = await request.app.state.verifier.verify(authorization[7:].strip())
        viewer = Viewer(principal, principal.subject, None)
    else:
        cookie = request.cookies.get(SESSION_COOKIE)
        if not cookie:
            return None
        async with request.app.state.pool.acquire() as conn:
            session = await sessions.load(conn, request.app.state.settings, cookie, _now())
        if session is None:
            return None
        viewer = Viewer(session.principal, session.display_name, session.csrf_token)
    if not viewer.principal.roles & {"clerk", "operator"} or not viewer.principal.municipalities:
        raise AuthError(403, "Ihr Zugang berechtigt nicht zur Sachbearbeitung.")
    return viewer


async def _guard(request: Request, authorization: str | None) -> Viewer | HTMLResponse:
    try:
        viewer = await _viewer(request, authorization)
    except AuthError as exc:
        message = exc.detail if exc.status == 403 else "Die Anmeldung ist ungültig oder abgelaufen."
        return _login_page(request, exc.status, message)
    if viewer is None:
        expired = SESSION_COOKIE in request.cookies
        return _login_page(request, 401, NOTICES["abgelaufen"] if expired else None)
    return viewer


def _redirect_uri(request: Request, path: str) -> str:
    base = request.app.state.settings.public_url or str(request.base_url)
    return base.rstrip("/") + path


def _definition(engine: Engine, name: str, version: int) -> Definition | None:
    try:
        return engine.registry.get(name, version)
    except KeyError:
        return None


def _queue_choices(definition: Definition | None, step_id: str, municipality: str) -> list[str]:
    """Queues a task of this step may move to: the step's candidates for the city and its escalation queue."""
    step = next((s for s in definition.steps if s.id == step_id), None) if definition else None
    if not isinstance(step, HumanStep):
        return []
    queues = list(step.assignment.by_municipality.get(municipality, step.assignment.queues))
    if step.deadline and step.deadline.escalate_to_queue:
        queues.append(step.deadline.escalate_to_queue)
    return list(dict.fromkeys(queues))


def _int(value: str | None, default: int) -> int:
    try:
        return max(1, int(value or default))
    except ValueError:
        return default


# --- sign-in and sign-out ---------------------------------------------------------------------------------

@views.get(f"{BASE}/anmelden")
async def login(request: Request, ziel: str | None = None) -> Response:
    """Start Authorization Code + PKCE: remember state, nonce and verifier server-side, go to the provider."""
    if not request.app.state.discovery.configured:
        return _login_page(request, 503)
    redirect_uri = _redirect_uri(request, f"{BASE}/anmeldung")
    try:
        auth = await request.app.state.relying_party.authorization_request(redirect_uri)
    except OidcError as exc:
        log.warning("oidc login not possible: %s", exc)
        return _login_page(request, 503, "Der Anmeldedienst ist gerade nicht erreichbar. Bitte später erneut.")
    async with request.app.state.pool.acquire() as conn:
        cookie = await sessions.start_login(
            conn, sessions.Login(auth.state, auth.nonce, auth.code_verifier, sessions.safe_return_path(ziel)), _now())
    response = RedirectResponse(auth.url, status_code=303)
    response.set_cookie(LOGIN_COOKIE, cookie, max_age=int(sessions.LOGIN_TTL.total_seconds()), httponly=True,
                        samesite="lax", secure=request.app.state.settings.cookie_secure, path=BASE)
    return response


@views.get(f"{BASE}/anmeldung")
async def login_callback(request: Request, code: str | None = None, state: str | None = None,
                         error: str | None = None) -> Response:
    """The provider's answer: check state against this browser's login, exchange the code, open a session."""
    settings = request.app.state.settings
    async with request.app.state.pool.acquire() as conn:
        pending = await sessions.finish_login(conn, request.cookies.get(LOGIN_COOKIE), state, _now())
    if pending is None or error or not code:
        log.info("oidc callback refused", extra={"error": error, "known_login": pending is not None})
        return _login_page(request, 400, "Die Anmeldung wurde abgebrochen oder ist abgelaufen. Bitte erneut anmelden.")
    verifier = request.app.state.verifier
    try:
        tokens = await request.app.state.relying_party.exchange(code, pending.code_verifier,
                                                                _redirect_uri(request, f"{BASE}/anmeldung"))
        id_claims = await verifier.verify_id_token(tokens.id_token, pending.nonce)
        principal: Principal = await verifier.verify(tokens.access_token)
    except (OidcError, AuthError) as exc:
        log.warning("oidc login failed: %s", exc)
        return _login_page(request, 401, "Die Anmeldung ist fehlgeschlagen. Bitte erneut anmelden.")
    if id_claims.get("sub") != principal.subject:
        return _login_page(request, 401, "Die Anmeldung ist fehlgeschlagen. Bitte erneut anmelden.")
    if not principal.roles & {"clerk", "operator"} or not principal.municipalities:
        return _login_page(request, 403, "Ihr Zugang berechtigt nicht zur Sachbearbeitung.")
    name = str(id_claims.get("name") or id_claims.get("preferred_username") or "Sachbearbeitung")
    async with request.app.state.pool.acquire() as conn:
        cookie = await sessions.create(conn, settings, principal, name, tokens.id_token, _now())
    response = RedirectResponse(pending.return_to, status_code=303)
    response.delete_cookie(LOGIN_COOKIE, path=BASE)
    response.set_cookie(SESSION_COOKIE, cookie, max_age=settings.session_max_age_s, httponly=True, samesite="lax",
                        secure=settings.cookie_secure, path=BASE)
    return response


async def _form(request: Request) -> dict[str, str]:
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    return {k: v[0] for k, v in form.items()}


@views.post(f"{BASE}/abmelden")
async def logout(request: Request) -> Response:
    """End the session here, then at the provider (RP-initiated logout) when it offers that."""
    form = await _form(request)
    cookie = request.cookies.get(SESSION_COOKIE)
    async with request.app.state.pool.acquire() as conn:
        session = await sessions.load(conn, request.app.state.settings, cookie, _now())
        if session is not None and not session.csrf_ok(form.get("csrf")):
            return _render("anmelden.html", status=403, fehler="Das Formular ist abgelaufen. Bitte neu laden.")
        id_token = await sessions.end(conn, cookie)
    target = f"{BASE}/abgemeldet"
    if id_token:
        try:
            target = await request.app.state.relying_party.logout_url(
                id_token, _redirect_uri(request, target)) or target
        except OidcError as exc:
            log.warning("provider logout skipped: %s", exc)
    response = RedirectResponse(target, status_code=303)
    response.delete_cookie(SESSION_COOKIE, path=BASE)
    return response


@views.get(f"{BASE}/abgemeldet", response_class=HTMLResponse)
async def logged_out(request: Request) -> Response:
    return _render("abgemeldet.html", anmelden=f"{BASE}/anmelden")


# --- task list ----------------------------------------------------------------------------------------------

@views.get(BASE, response_class=HTMLResponse)
async def task_list(request: Request, queue: str | None = None, status: str | None = None, seite: str | None = None,
                    hinweis: str | None = None, authorization: Annotated[str | None, Header()] = None) -> Response:
    viewer = await _guard(request, authorization)
    if isinstance(viewer, HTMLResponse):
        return viewer
    who = viewer.principal
    status = status if status in STATUS_FILTERS else "alle"
    page = _int(seite, 1)
    engine: Engine = request.app.state.engine
    async with request.app.state.pool.acquire() as conn:
        queues = await repository.task_queues(conn, sorted(who.municipalities))
        queue = queue if queue in queues else None
        rows, total = await repository.task_page(
            conn, sorted(who.municipalities), queue, STATUS_FILTERS[status][1],
            who.subject if status == "meine" else None, PAGE_SIZE, (page - 1) * PAGE_SIZE)
    names, now = _names(), _now()
    tasks = []
    for r in rows:
        definition = _definition(engine, r["definition"], r["definition_version"])
        tasks.append({
            **r, "step_title": labels.step_title(definition, r["step"]),
            "definition_title": definition.title if definition else r["definition"],
            "municipality_name": names.get(r["municipality"], r["municipality"]),
            "overdue": r["due_at"] is not None and r["due_at"] < now,
            "status_text": ("von Ihnen übernommen" if r["assignee"] == who.subject
                            else labels.TASK_STATUS.get(r["status"], r["status"])),
        })
    pages = max(1, math.ceil(total / PAGE_SIZE))

    def link(p: int) -> str:
        query = {k: v for k, v in (("status", status), ("queue", queue), ("seite", str(p))) if v}
        return f"{BASE}?{urlencode(query)}"

    return _render("aufgaben.html", tasks=tasks, queues=queues, queue=queue, status_filter=status,
                   status_filters=STATUS_FILTERS, page=page, pages=pages, total=total,
                   prev=link(page - 1) if page > 1 else None, next=link(page + 1) if page < pages else None,
                   viewer=viewer, hinweis=NOTICES.get(hinweis or ""), ziel=link(page))


# --- case page and actions ----------------------------------------------------------------------------------

async def _case_page(request: Request, viewer: Viewer, case_id: UUID, hinweis: str | None) -> HTMLResponse:
    who = viewer.principal
    engine: Engine = request.app.state.engine
    async with request.app.state.pool.acquire() as conn:
        case = await repository.get_case(conn, case_id)
        if case is None or case.municipality not in who.municipalities:
            return _render("fehler.html", status=404, viewer=viewer, fehler="Dieser Vorgang wurde nicht gefunden.")
        audit = await repository.audit_of(conn, case_id)
        timers = await repository.timers_of(conn, case_id)
        task = await repository.active_task(conn, case_id)
    definition = _definition(engine, case.definition, case.definition_version)
    history = [{"at": a["at"], "who": labels.actor(a["actor"], who.subject),
                "text": labels.sentence(a["action"], a["detail"], a["before"], a["after"], definition)}
               for a in reversed(audit)]
    decisions: list[tuple[str, str]] = []
    queue_choices = [q for q in _queue_choices(definition, task.step, case.municipality)
                     if q != task.queue] if task is not None else []
    if task is not None and definition is not None:
        step = next((s for s in definition.steps if s.id == task.step), None)
        if isinstance(step, HumanStep):
            decisions = [(d, labels.DECISIONS.get(d, d)) for d in step.decisions
                         if d != "extend" or not case.context.fiction_extended]
    ctx = case.context.to_json()
    return _render(
        "vorgang.html", case=case, ctx=ctx, history=history, viewer=viewer, task=task,
        next_timer=timers[0] if timers else None, timer_names=labels.TIMERS, decisions=decisions,
        queue_choices=queue_choices,
        definition_title=definition.title if definition else case.definition,
        step_title=labels.step_title(definition, case.current_step) if case.current_step else labels.NONE,
        task_step_title=labels.step_title(definition, task.step) if task else None,
        state=labels.STATES.get(case.state, case.state),
        outcome=labels.OUTCOMES.get(case.outcome or "", case.outcome),
        municipality_name=_names().get(case.municipality, case.municipality),
        hinweis=NOTICES.get(hinweis or ""), overdue=task is not None and task.due_at is not None
        and task.due_at < _now())


def _uuid(value: str) -> UUID | None:
    """Path ids are parsed after the sign-in check, so a stranger learns nothing from a 422."""
    try:
        return UUID(value)
    except ValueError:
        return None


def _reason(form: dict[str, str]) -> str | None:
    """The clerk's free-text reason, trimmed; None if it holds a character the contracts refuse."""
    reason = (form.get("begruendung") or "").strip()[:500]
    return None if refused_character(reason, multiline=True) else reason


NOT_FOUND = "Diese Aufgabe wurde nicht gefunden."
BAD_REASON = "Die Begründung enthält Steuerzeichen. Bitte nur Text eingeben."


@views.get(f"{BASE}/vorgaenge/{{case_id}}", response_class=HTMLResponse)
async def case_page(case_id: str, request: Request, hinweis: str | None = None,
                    authorization: Annotated[str | None, Header()] = None) -> Response:
    viewer = await _guard(request, authorization)
    if isinstance(viewer, HTMLResponse):
        return viewer
    case_uuid = _uuid(case_id)
    if case_uuid is None:
        return _render("fehler.html", status=404, viewer=viewer, fehler="Dieser Vorgang wurde nicht gefunden.")
    return await _case_page(request, viewer, case_uuid, hinweis=hinweis)


@dataclass(frozen=True)
class TaskAction:
    """A signed-in, authorised form post on one task: who, what they sent, which task."""

    viewer: Viewer
    form: dict[str, str]
    task_id: UUID


async def _action_guard(request: Request, authorization: str | None, task_id: str,
                        team_lead: bool = False) -> TaskAction | HTMLResponse:
    """Sign-in, CSRF and role checks of a task action, then the task id (a stranger learns nothing from it)."""
    viewer = await _guard(request, authorization)
    if isinstance(viewer, HTMLResponse):
        return viewer
    form = await _form(request)
    if viewer.csrf is not None and not sessions.same_secret(form.get("csrf"), viewer.csrf):
        return _render("fehler.html", status=403, viewer=viewer,
                       fehler="Das Formular ist abgelaufen oder stammt nicht von dieser Seite. Bitte neu laden.")
    if team_lead and not viewer.may_reassign:
        return _render("fehler.html", status=403, viewer=viewer,
                       fehler="Nur die Teamleitung kann Aufgaben umverteilen.")
    if not team_lead and not viewer.may_decide:
        return _render("fehler.html", status=403, viewer=viewer,
                       fehler="Nur die Sachbearbeitung kann Aufgaben übernehmen und entscheiden.")
    task_uuid = _uuid(task_id)
    if task_uuid is None:
        return _render("fehler.html", status=404, viewer=viewer, fehler=NOT_FOUND)
    return TaskAction(viewer, form, task_uuid)


WORKFLOW_CONFLICT = "Die Aufgabe ist nicht mehr offen: sie wurde inzwischen übernommen oder erledigt."


async def _on_task(request: Request, viewer: Viewer,
                   act: Callable[[Conn], Awaitable[T]]) -> T | HTMLResponse:
    """Run a task action in a transaction of its own; a task that is gone or no longer open gets its page."""
    try:
        async with request.app.state.pool.acquire() as conn, conn.transaction():
            return await act(conn)
    except NotFound:
        return _render("fehler.html", status=404, viewer=viewer, fehler=NOT_FOUND)
    except WorkflowError:
        return _render("fehler.html", status=409, viewer=viewer, fehler=WORKFLOW_CONFLICT)


@views.post(f"{BASE}/aufgaben/{{task_id}}/uebernehmen")
async def claim(task_id: str, request: Request, authorization: Annotated[str | None, Header()] = None) -> Response:
    guarded = await _action_guard(request, authorization, task_id)
    if isinstance(guarded, HTMLResponse):
        return guarded
    viewer, form, task_uuid = guarded.viewer, guarded.form, guarded.task_id
    engine: Engine = request.app.state.engine
    who = viewer.principal
    task = await _on_task(request, viewer, lambda conn: engine.claim_task(
        PostgresUnitOfWork(conn), task_uuid, who.actor, set(who.municipalities)))
    if isinstance(task, HTMLResponse):
        return task
    back = form.get("ziel")
    if back and sessions.safe_return_path(back) == back and back.startswith(f"{BASE}?"):
        return RedirectResponse(f"{back}&hinweis=uebernommen", status_code=303)
    return RedirectResponse(f"{BASE}/vorgaenge/{task.case_id}?hinweis=uebernommen", status_code=303)


@views.post(f"{BASE}/aufgaben/{{task_id}}/erledigen")
async def complete(task_id: str, request: Request, authorization: Annotated[str | None, Header()] = None) -> Response:
    guarded = await _action_guard(request, authorization, task_id)
    if isinstance(guarded, HTMLResponse):
        return guarded
    viewer, form, task_uuid = guarded.viewer, guarded.form, guarded.task_id
    engine: Engine = request.app.state.engine
    decision, reason = form.get("entscheidung", ""), _reason(form)
    if reason is None:
        return _render("fehler.html", status=422, viewer=viewer, fehler=BAD_REASON)
    if decision not in labels.DECISIONS:
        return _render("fehler.html", status=422, viewer=viewer, fehler="Bitte wählen Sie eine Entscheidung.")
    who = viewer.principal
    done = await _on_task(request, viewer, lambda conn: engine.complete_task(
        PostgresUnitOfWork(conn), task_uuid, decision, who.actor, set(who.municipalities), reason or None))
    if isinstance(done, HTMLResponse):
        return done
    return RedirectResponse(f"{BASE}?hinweis=erledigt", status_code=303)


@views.post(f"{BASE}/aufgaben/{{task_id}}/umverteilen")
async def reassign(task_id: str, request: Request, authorization: Annotated[str | None, Header()] = None) -> Response:
    """Team lead: move a task to another queue of its step (it is open there again), with a reason."""
    guarded = await _action_guard(request, authorization, task_id, team_lead=True)
    if isinstance(guarded, HTMLResponse):
        return guarded
    viewer, form, task_uuid = guarded.viewer, guarded.form, guarded.task_id
    engine: Engine = request.app.state.engine
    reason = _reason(form)
    if reason is None:
        return _render("fehler.html", status=422, viewer=viewer, fehler=BAD_REASON)
    who = viewer.principal

    async def move(conn: Conn) -> Task | HTMLResponse:
        task = await repository.get_task(conn, task_uuid)
        case = await repository.get_case(conn, task.case_id) if task else None
        if task is None or case is None:
            raise NotFound("task")
        definition = _definition(engine, case.definition, case.definition_version)
        if form.get("queue") not in _queue_choices(definition, task.step, case.municipality) or not reason:
            return _render("fehler.html", status=422, viewer=viewer,
                           fehler="Bitte wählen Sie eine Warteschlange und geben Sie eine Begründung an.")
        return await engine.reassign_task(PostgresUnitOfWork(conn), task_uuid, who.actor, set(who.municipalities),
                                          form["queue"], None, reason)

    task = await _on_task(request, viewer, move)
    if isinstance(task, HTMLResponse):
        return task
    return RedirectResponse(f"{BASE}/vorgaenge/{task.case_id}?hinweis=umverteilt", status_code=303)
