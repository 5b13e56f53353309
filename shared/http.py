"""HTTP plumbing of every service: RFC 9457 problem details, size-capped bodies, connection dependencies."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from typing import Annotated, Any, Final, TypeVar

import orjson
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException

from shared.db import Conn

PROBLEM: Final = "application/problem+json"
PROBLEM_BASE: Final = "https://kommunal-pulse.de/problems/"
"""Where the project's own problem types live (`type` members that are not `about:blank`)."""


class ProblemError(Exception):
    """An error the client can act on, answered as problem details; `extra` are the type's own members."""

    def __init__(self, status: int, title: str, detail: str | None = None, *, type: str = "about:blank",
                 headers: Mapping[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail or title)
        self.status = status
        self.title = title
        self.detail = detail
        self.type = type
        self.headers = dict(headers or {})
        self.extra = extra


def problem_response(problem: ProblemError) -> Response:
    """The one rendering of problem details: type, title, status, detail (when given), then the extra members."""
    body: dict[str, Any] = {"type": problem.type, "title": problem.title, "status": problem.status}
    if problem.detail is not None:
        body["detail"] = problem.detail
    body.update(problem.extra)
    return Response(orjson.dumps(body), status_code=problem.status, media_type=PROBLEM, headers=problem.headers)


E = TypeVar("E", bound=Exception)
Translate = Callable[[Request, E], ProblemError]
"""Turns a framework or domain exception into the problem the service answers with."""


def install_problem_handlers(
    app: FastAPI, *, http: Translate[HTTPException], validation: Translate[RequestValidationError],
    errors: Mapping[type[Exception], Translate[Any]] | None = None,
) -> None:
    """Answer every `ProblemError`, framework error (unknown route, wrong method, invalid parameter or body)
    and each exception type of `errors` as problem details; the service decides the members by translating."""

    async def on_problem(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ProblemError)
        return problem_response(exc)

    def handler(translate: Translate[Any]) -> Callable[[Request, Exception], Any]:
        async def on_error(request: Request, exc: Exception) -> Response:
            return problem_response(translate(request, exc))

        return on_error

    app.add_exception_handler(ProblemError, on_problem)
    app.add_exception_handler(HTTPException, handler(http))
    app.add_exception_handler(RequestValidationError, handler(validation))
    for kind, translate in (errors or {}).items():
        app.add_exception_handler(kind, handler(translate))


async def read_body(request: Request, limit: int, too_large: ProblemError) -> bytes:
    """Read at most `limit` bytes of the body; a longer one is refused with `too_large` without buffering it."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def connection(request: Request) -> AsyncIterator[Conn]:
    """A connection from the app's pool (`app.state.pool`) for one request."""
    async with request.app.state.pool.acquire() as conn:
        yield conn


async def transaction(request: Request) -> AsyncIterator[Conn]:
    """A connection in a transaction: committed when the route returns, rolled back when it raises."""
    async with request.app.state.pool.acquire() as conn, conn.transaction():
        yield conn


# scope="function": released (and committed) before the response is sent, so a client that got an answer can
# read what it wrote, and a slow client never holds a connection
Connection = Annotated[Conn, Depends(connection, scope="function")]
Transaction = Annotated[Conn, Depends(transaction, scope="function")]
