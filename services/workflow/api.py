"""HTTP adapter of the workflow service: cases, clerk tasks, operator actions and FIT-Connect-style callbacks."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

import orjson
from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.routing import BaseRoute

from services.workflow import repository
from services.workflow.auth import AuthError, Principal, check_platform
from services.workflow.model import Case, Task
from services.workflow.schemas import (
    AuditOut,
    CallbackAccepted,
    CaseOut,
    CompleteTask,
    FitConnectCallback,
    OperatorAction,
    ReassignTask,
    TaskOut,
    TimerOut,
)
from services.workflow.service import Engine, NotFound, WorkflowError
from services.workflow.settings import CallbackPlatform
from services.workflow.unit_of_work import PostgresUnitOfWork
from shared.db import Conn
from shared.events import application_event_adapter
from shared.http import PROBLEM_BASE, Connection, ProblemError, Transaction
from shared.http import install_problem_handlers as install

log = logging.getLogger(__name__)


def _problem(status: int, title: str, detail: str, **extra: Any) -> ProblemError:
    """The workflow's problems: a type named after the title, a detail always, a challenge with every 401."""
    headers = {"WWW-Authenticate": 'Bearer realm="kommunal-pulse"'} if status == 401 else None
    return ProblemError(status, title, detail, type=f"{PROBLEM_BASE}{title.lower().replace(' ', '-')}",
                        headers=headers, **extra)


def _invalid(_: Request, exc: RequestValidationError | ValidationError) -> ProblemError:
    errors = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
    return _problem(422, "Invalid Request", "the request does not match the schema", errors=errors)


def _auth(_: Request, exc: AuthError) -> ProblemError:
    return _problem(exc.status, "Unauthorized" if exc.status == 401 else "Forbidden", exc.detail)


def install_problem_handlers(app: FastAPI) -> None:
    """Every error of the workflow API as problem details (shared.http), with the workflow's own types."""
    install(
        app,
        http=lambda _, exc: _problem(exc.status_code, str(exc.detail), str(exc.detail)),
        validation=_invalid,
        errors={
            AuthError: _auth,
            NotFound: lambda _, exc: _problem(404, "Not Found", f"{exc} not found"),
            WorkflowError: lambda _, exc: _problem(409, "Conflict", str(exc)),
            ValidationError: _invalid,
        },
    )


# --- dependencies -------------------------------------------------------------------------------------

AuthDependency = Callable[[Request, str | None], Awaitable[Any]]
_AUTHENTICATING: set[AuthDependency] = set()
"""Dependencies that authenticate the caller; `AuthFirstRoute` runs them before the body is read."""


def authenticating(dependency: AuthDependency) -> AuthDependency:
    _AUTHENTICATING.add(dependency)
    return dependency


_PRINCIPAL = "kp.workflow.principal"


def _role(*roles: str) -> AuthDependency:
    @authenticating
    async def dependency(request: Request, authorization: Annotated[str | None, Header()] = None) -> Principal:
        if not authorization or not authorization.lower().startswith("bearer "):
            raise AuthError(401, "bearer token required")
        # Verified once per request (AuthFirstRoute, then the dependency itself); kept in the request's own
        # scope, never in `request.state`, which servers may share between requests.
        principal: Principal | None = request.scope.get(_PRINCIPAL)
        if principal is None:
            principal = await request.app.state.verifier.verify(authorization[7:].strip())
            request.scope[_PRINCIPAL] = principal
        if not principal.roles & set(roles):
            raise AuthError(403, f"requires role {' or '.join(roles)}")
        if not principal.municipalities:
            raise AuthError(403, "token grants no municipality")
        return principal

    return dependency


@authenticating
async def callback_platform(request: Request,
                            authorization: Annotated[str | None, Header()] = None) -> tuple[str, CallbackPlatform]:
    """The calling platform of a callback (HTTP Basic)."""
    return check_platform(request.app.state.settings.callback_platforms, authorization)


class AuthFirstRoute(APIRoute):
    """Authenticates before FastAPI reads and validates the body or the parameters: an anonymous caller gets 401
    whatever it sent, never a 422 that tells it about the endpoint's schema."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        original = super().get_route_handler()
        checks = [d.call for d in self.dependant.dependencies if d.call in _AUTHENTICATING]

        async def handler(request: Request) -> Response:
            for check in checks:
                await check(request, request.headers.get("authorization"))
            return await original(request)

        return handler


def api_routes(routes: Sequence[BaseRoute]) -> list[APIRoute]:
    """Every `APIRoute`, including those of included routers (which newer FastAPI keeps as a router object)."""
    out: list[APIRoute] = []
    for route in routes:
        if isinstance(route, APIRoute):
            out.append(route)
        included = getattr(route, "original_router", None)
        if included is not None:
            out += api_routes(included.routes)
    return out


def protected_routes(app: FastAPI) -> list[APIRoute]:
    """Routes of the app that authenticate their callers (for tests and docs)."""
    return [r for r in api_routes(app.routes) if any(d.call in _AUTHENTICATING for d in r.dependant.dependencies)]


router = APIRouter(route_class=AuthFirstRoute)

Clerk = Annotated[Principal, Depends(_role("clerk", "operator"))]
ClerkOnly = Annotated[Principal, Depends(_role("clerk"))]
Operator = Annotated[Principal, Depends(_role("operator"))]


def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


async def _case_view(conn: Conn, engine: Engine, case: Case) -> CaseOut:
    timers = [TimerOut(**t) for t in await repository.timers_of(conn, case.case_id)]
    task = await repository.active_task(conn, case.case_id)
    title = None
    if case.current_step:
        try:
            title = engine.registry.get(case.definition, case.definition_version).step(case.current_step).title
        except KeyError:
            title = None
    return CaseOut(
        case_id=case.case_id, application_id=case.application_id, municipality=case.municipality,
        service=case.service, definition=case.definition, definition_version=case.definition_version,
        state=case.state.value, current_step=case.current_step, current_step_title=title,
        step_entered_at=case.step_entered_at, attempts=case.attempts, last_error=case.last_error,
        next_timer=timers[0] if timers else None, timers=timers, open_task=_task_out(task) if task else None,
        outcome=case.outcome, opened_at=case.opened_at, closed_at=case.closed_at, context=case.context.to_json())


def _task_out(task: Task) -> TaskOut:
    return TaskOut.model_validate(task, from_attributes=True)


# --- cases --------------------------------------------------------------------------------------------

@router.get("/v1/cases/{case_id}", summary="Case state: current step, next timer, attempts, last error")
async def get_case(case_id: UUID, request: Request, who: Clerk, conn: Connection) -> CaseOut:
    case = await repository.get_case(conn, case_id)
    if case is None or case.municipality not in who.municipalities:
        raise NotFound("case")
    return await _case_view(conn, _engine(request), case)


@router.get("/v1/cases/{case_id}/audit", summary="Audit trail of a case (append-only)")
async def get_audit(case_id: UUID, who: Clerk, conn: Connection) -> list[AuditOut]:
    case = await repository.get_case(conn, case_id)
    if case is None or case.municipality not in who.municipalities:
        raise NotFound("case")
    return [AuditOut(**a) for a in await repository.audit_of(conn, case_id)]


@router.get("/v1/cases", summary="Cases of the caller's municipalities, e.g. `?state=parked`")
async def list_cases(request: Request, who: Clerk, conn: Connection, state: str | None = None,
                     limit: Annotated[int, Query(ge=1, le=500)] = 100) -> list[CaseOut]:
    cases = await repository.list_cases(conn, sorted(who.municipalities), state, limit)
    return [await _case_view(conn, _engine(request), c) for c in cases]


OperatorStep = Callable[[Engine], Callable[..., Awaitable[Case]]]


async def _operator_step(step: OperatorStep, case_id: UUID, body: OperatorAction, request: Request,
                         who: Principal, conn: Conn) -> CaseOut:
    engine = _engine(request)
    case = await step(engine)(PostgresUnitOfWork(conn), case_id, f"operator:{who.actor}", body.reason,
                              set(who.municipalities))
    return await _case_view(conn, engine, case)


@router.post("/v1/cases/{case_id}/retry", summary="Operator: run a parked step again")
async def retry_case(case_id: UUID, body: OperatorAction, request: Request, who: Operator,
                     conn: Transaction) -> CaseOut:
    return await _operator_step(lambda e: e.operator_retry, case_id, body, request, who, conn)


@router.post("/v1/cases/{case_id}/skip", summary="Operator: skip a parked step with a reason")
async def skip_step(case_id: UUID, body: OperatorAction, request: Request, who: Operator,
                    conn: Transaction) -> CaseOut:
    return await _operator_step(lambda e: e.operator_skip, case_id, body, request, who, conn)


# --- clerk tasks --------------------------------------------------------------------------------------

@router.get("/v1/tasks", summary="Task list of the caller's municipalities, by queue and due date")
async def list_tasks(request: Request, who: Clerk, queue: str | None = None,
                     status: Annotated[list[str] | None, Query()] = None, due_before: datetime | None = None,
                     municipality: str | None = None, *, conn: Connection,
                     limit: Annotated[int, Query(ge=1, le=500)] = 100) -> list[TaskOut]:
    allowed = sorted(who.municipalities)
    if municipality is not None:
        if municipality not in who.municipalities:
            raise AuthError(403, f"no access to municipality {municipality}")
        allowed = [municipality]
    rows = await repository.list_tasks(conn, allowed, queue, status or ["open", "claimed"], due_before, limit)
    return [TaskOut(**r) for r in rows]


@router.post("/v1/tasks/{task_id}/claim", summary="Claim a task")
async def claim_task(task_id: UUID, request: Request, who: ClerkOnly, conn: Transaction) -> TaskOut:
    task = await _engine(request).claim_task(PostgresUnitOfWork(conn), task_id, who.actor, set(who.municipalities))
    return _task_out(task)


@router.post("/v1/tasks/{task_id}/complete", summary="Complete a claimed task with a decision")
async def complete_task(task_id: UUID, body: CompleteTask, request: Request, who: ClerkOnly,
                        conn: Transaction) -> CaseOut:
    engine = _engine(request)
    case = await engine.complete_task(PostgresUnitOfWork(conn), task_id, body.decision, who.actor,
                                      set(who.municipalities), body.reason)
    return await _case_view(conn, engine, case)


@router.post("/v1/tasks/{task_id}/reassign", summary="Move a task to another queue or person")
async def reassign_task(task_id: UUID, body: ReassignTask, request: Request, who: Clerk,
                        conn: Transaction) -> TaskOut:
    task = await _engine(request).reassign_task(PostgresUnitOfWork(conn), task_id, who.actor,
                                                set(who.municipalities), body.queue, body.assignee, body.reason)
    return _task_out(task)


# --- FIT-Connect-style callbacks ----------------------------------------------------------------------

CALLBACK_TO_APPLICATION = {
    "submit-submission": "application.submitted",
    "notify-submission": "application.documents.added",
    "reject-submission": "application.decided",
}


@router.post("/v1/callbacks/fit-connect", status_code=202, summary="Submission status callback (event log shape)")
async def fit_connect_callback(
    body: FitConnectCallback, request: Request,
    caller: Annotated[tuple[str, CallbackPlatform], Depends(callback_platform)],
) -> CallbackAccepted:
    """Turns a submission event into an application event on Kafka; answers once the broker acknowledged."""
    settings = request.app.state.settings
    metrics = request.app.state.metrics
    platform_id, platform = caller
    if body.municipality not in platform.municipalities or (platform.service and body.service != platform.service):
        metrics.callbacks.labels(body.event, "forbidden").inc()
        raise AuthError(403, f"platform {platform_id} may not report for {body.municipality}/{body.service}")
    application_id = f"fit:{body.submission_id}"
    kind = CALLBACK_TO_APPLICATION.get(body.event)
    if body.event == "notify-submission" and not body.documents:
        kind = None
    if kind is None:
        metrics.callbacks.labels(body.event, "recorded").inc()
        log.info("callback without application event", extra={"event": body.event, "platform": platform_id})
        return CallbackAccepted(event=body.event, application_id=application_id, application_event_id=None,
                                application_event_type=None)
    payloads: dict[str, dict[str, Any]] = {
        "application.submitted": {"channel": "fit_connect", "documents": body.documents},
        "application.documents.added": {"documents": body.documents},
        "application.decided": {"outcome": "rejected"},
    }
    data = payloads[kind]
    event = application_event_adapter.validate_python({
        "id": uuid.uuid5(uuid.NAMESPACE_URL, f"kp:fit-connect:{body.jti}"), "type": kind, "source": platform_id,
        "time": datetime.fromtimestamp(body.iat, UTC), "municipality": body.municipality, "service": body.service,
        "application_id": application_id, "data": data,
    })
    await request.app.state.producer.send_and_wait(
        settings.application_topic, orjson.dumps(event.model_dump(mode="json")), key=event.kafka_key)
    metrics.callbacks.labels(body.event, "published").inc()
    return CallbackAccepted(event=body.event, application_id=application_id, application_event_id=event.id,
                            application_event_type=kind)
