"""Every protected route of the workflow API authenticates before it reads the body or parameters."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute

from services.workflow.api import api_routes, protected_routes
from services.workflow.app import create_app
from services.workflow.settings import WorkflowSettings
from tests.integration.test_workflow_support import ISSUER, Signer

# Routes open to anyone. A new route is protected unless it is added here on purpose.
PUBLIC = {"/healthz", "/readyz", "/metrics", "/asyncapi.json", "/docs", "/sachbearbeitung/anmelden",
          "/sachbearbeitung/anmeldung", "/sachbearbeitung/abmelden", "/sachbearbeitung/abgemeldet"}
# Pages of the clerk view: they check the session (or a bearer token) inside the handler, before they parse an id
# or read the form, and answer a stranger with the sign-in page (401).
VIEW_PAGES = {"/sachbearbeitung", "/sachbearbeitung/vorgaenge/{case_id}",
              "/sachbearbeitung/aufgaben/{task_id}/uebernehmen", "/sachbearbeitung/aufgaben/{task_id}/erledigen",
              "/sachbearbeitung/aufgaben/{task_id}/umverteilen"}
INVALID_BODIES = [b"{not json", b'{"decision": 42, "reason": "\\u0000", "unexpected": []}', b"[]", b"\x00\xff"]


@pytest.fixture(scope="module")
def app() -> FastAPI:
    signer = Signer()
    return create_app(WorkflowSettings(oidc_issuer=ISSUER, oidc_jwks_json=signer.jwks))


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://workflow") as c:
        yield c


def _path(route: APIRoute) -> str:
    return re.sub(r"\{[^}]+\}", "not-a-uuid", route.path)


def _calls(app: FastAPI) -> list[tuple[str, str]]:
    return [(method, _path(r)) for r in protected_routes(app) for method in sorted(r.methods - {"HEAD"})]


class TestAuthenticationFirst:
    def test_every_route_outside_the_public_list_authenticates(self, app: FastAPI) -> None:
        protected = {r.path for r in protected_routes(app)}
        every = {r.path for r in api_routes(app.routes)}
        unprotected = every - protected - PUBLIC - VIEW_PAGES
        assert not unprotected, f"unprotected: {sorted(unprotected)}"
        assert {"/v1/tasks/{task_id}/complete", "/v1/callbacks/fit-connect", "/v1/cases"} <= protected

    @pytest.mark.parametrize("body", INVALID_BODIES)
    async def test_anonymous_caller_gets_401_whatever_the_body(
        self, app: FastAPI, client: httpx.AsyncClient, body: bytes
    ) -> None:
        calls = _calls(app)
        assert len(calls) >= 9
        for method, path in calls:
            resp = await client.request(method, path, content=body, headers={"Content-Type": "application/json"},
                                        params={"limit": "nope", "due_before": "gestern"})
            assert resp.status_code == 401, (method, path, resp.status_code, resp.text[:200])
            assert resp.headers["content-type"].startswith("application/problem+json")

    async def test_a_forged_token_gets_401_before_the_body_is_read(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        forged = Signer().token("mallory", ["clerk", "operator"], ["06413000"])  # signed by a foreign key
        for method, path in _calls(app):
            if path.startswith("/v1/callbacks"):
                continue  # platforms authenticate with HTTP Basic, covered above
            resp = await client.request(method, path, content=b"{not json",
                                        headers={"Authorization": f"Bearer {forged}",
                                                 "Content-Type": "application/json"})
            assert resp.status_code == 401, (method, path, resp.text[:200])

    async def test_wrong_platform_secret_gets_401_before_the_body_is_read(self, client: httpx.AsyncClient) -> None:
        resp = await client.post("/v1/callbacks/fit-connect", content=b"{not json",
                                 headers={"Authorization": "Basic bWFsbG9yeTp4", "Content-Type": "application/json"})
        assert resp.status_code == 401


class TestClerkViewSignInFirst:
    @pytest.mark.parametrize("body", INVALID_BODIES)
    async def test_stranger_gets_the_sign_in_page_whatever_the_id_and_form(
        self, app: FastAPI, client: httpx.AsyncClient, body: bytes
    ) -> None:
        pages = [r for r in api_routes(app.routes) if r.path in VIEW_PAGES]
        assert {r.path for r in pages} == VIEW_PAGES
        for route in pages:
            for method in sorted(route.methods - {"HEAD"}):
                resp = await client.request(method, _path(route), content=body,
                                            headers={"Content-Type": "application/x-www-form-urlencoded"},
                                            params={"seite": "nope"})
                assert resp.status_code == 401, (method, route.path, resp.status_code, resp.text[:200])
                assert "Anmeldung" in resp.text
