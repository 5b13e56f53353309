"""The shared HTTP plumbing: problem details, the size-capped body, connection and transaction dependencies."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from shared.http import PROBLEM, Connection, ProblemError, Transaction, install_problem_handlers, read_body


class FakeConnection:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        self.log.append("begin")
        try:
            yield
        except BaseException:
            self.log.append("rollback")
            raise
        self.log.append("commit")


class FakePool:
    def __init__(self) -> None:
        self.log: list[str] = []

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[FakeConnection]:
        self.log.append("acquire")
        try:
            yield FakeConnection(self.log)
        finally:
            self.log.append("release")


class Refused(Exception):
    pass


def _app() -> FastAPI:
    app = FastAPI()
    app.state.pool = FakePool()

    def on_http(request: Request, exc: HTTPException) -> ProblemError:
        return ProblemError(exc.status_code, str(exc.detail), instance=request.url.path, headers=exc.headers)

    def on_validation(_request: Request, exc: RequestValidationError) -> ProblemError:
        return ProblemError(422, "Invalid", f"{len(exc.errors())} error(s)")

    def on_refused(_request: Request, exc: Refused) -> ProblemError:
        return ProblemError(409, "Conflict", str(exc), type="https://example.org/refused")

    install_problem_handlers(app, http=on_http, validation=on_validation, errors={Refused: on_refused})

    @app.get("/problem")
    async def problem() -> None:
        raise ProblemError(429, "Too Many Requests", "slow down", type="/problems/rate-limited",
                           headers={"Retry-After": "3"}, code="rate_limited")

    @app.get("/number")
    async def number(n: int) -> int:
        return n

    @app.get("/refused")
    async def refused() -> None:
        raise Refused("taken")

    @app.post("/body")
    async def body(request: Request) -> dict[str, int]:
        data = await read_body(request, 10, ProblemError(413, "Payload Too Large", "over 10 bytes"))
        return {"size": len(data)}

    @app.get("/read")
    async def read(conn: Connection) -> str:
        return type(conn).__name__

    @app.post("/write")
    async def write(conn: Transaction, fail: bool = False) -> str:
        if fail:
            raise ProblemError(400, "Bad Request", "refused after writing")
        return "ok"

    return app


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=_app()), base_url="http://test") as c:
        yield c


def _problem(resp: httpx.Response) -> dict[str, Any]:
    assert resp.headers["content-type"] == PROBLEM
    body: dict[str, Any] = orjson.loads(resp.content)
    return body


class TestProblemDetails:
    async def test_problem_error_is_rendered_with_its_members_and_headers(self, client: httpx.AsyncClient) -> None:
        resp = await client.get("/problem")
        assert resp.status_code == 429
        assert resp.headers["retry-after"] == "3"
        assert _problem(resp) == {"type": "/problems/rate-limited", "title": "Too Many Requests", "status": 429,
                                  "detail": "slow down", "code": "rate_limited"}

    async def test_unknown_route_is_translated_by_the_service(self, client: httpx.AsyncClient) -> None:
        resp = await client.get("/nowhere")
        assert _problem(resp) == {"type": "about:blank", "title": "Not Found", "status": 404, "instance": "/nowhere"}

    async def test_invalid_parameter_is_translated_by_the_service(self, client: httpx.AsyncClient) -> None:
        resp = await client.get("/number", params={"n": "x"})
        assert _problem(resp) == {"type": "about:blank", "title": "Invalid", "status": 422, "detail": "1 error(s)"}

    async def test_listed_exception_type_is_translated(self, client: httpx.AsyncClient) -> None:
        resp = await client.get("/refused")
        assert resp.status_code == 409
        assert _problem(resp)["type"] == "https://example.org/refused"


class TestReadBody:
    async def test_body_within_the_limit_is_read(self, client: httpx.AsyncClient) -> None:
        assert (await client.post("/body", content=b"0123456789")).json() == {"size": 10}

    async def test_declared_length_over_the_limit_is_refused(self, client: httpx.AsyncClient) -> None:
        resp = await client.post("/body", content=b"x" * 11)
        assert (resp.status_code, _problem(resp)["detail"]) == (413, "over 10 bytes")

    async def test_streamed_body_over_the_limit_is_refused(self, client: httpx.AsyncClient) -> None:
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(3):
                yield b"abcd"

        resp = await client.post("/body", content=chunks())
        assert resp.status_code == 413


class TestConnectionDependencies:
    async def test_connection_is_released_after_the_route(self) -> None:
        app = _app()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
            assert (await c.get("/read")).json() == "FakeConnection"
        assert app.state.pool.log == ["acquire", "release"]

    async def test_transaction_commits_when_the_route_returns(self) -> None:
        app = _app()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
            assert (await c.post("/write")).status_code == 200
        assert app.state.pool.log == ["acquire", "begin", "commit", "release"]

    async def test_transaction_rolls_back_when_the_route_raises_a_problem(self) -> None:
        app = _app()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
            resp = await c.post("/write", params={"fail": "true"})
        assert (resp.status_code, _problem(resp)["detail"]) == (400, "refused after writing")
        assert app.state.pool.log == ["acquire", "begin", "rollback", "release"]
