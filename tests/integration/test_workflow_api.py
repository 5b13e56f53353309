"""Clerk task API, authentication and municipality isolation, FIT-Connect-style callbacks (real Kafka + DB)."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from services.workflow.adapters import FileSystemEAkte, ManualClock
from tests.integration.test_workflow_support import (
    RunningApp,
    Signer,
    WfEnv,
    case_of,
    follow_up,
    outbox_of,
    random_ags,
    running_app,
    submitted,
    types,
    wf_env,
)
from tests.waiting import eventually

__all__ = ["wf_env"]

GEWERBE = "99050012104000"
HUNDESTEUER = "99102013104000"
OFFENBACH = "06413000"
FIT = "https://schema.fitko.de/fit-connect/events/"


@pytest.fixture(scope="module")
async def wf(wf_env: WfEnv) -> AsyncIterator[RunningApp]:
    async with running_app(wf_env, clock=ManualClock(datetime.now(UTC)),
                           eakte=FileSystemEAkte(wf_env.eakte_root)) as running:
        yield running


async def wait_state(env: WfEnv, application_id: str, state: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        return await case_of(env.database_url, application_id)

    case = await eventually(probe, lambda c: c is not None and c["state"] == state, timeout=30)
    assert case is not None
    return case


def basic(user: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()}


class TestClerkTasks:
    async def test_fee_payment_then_clerk_claims_and_decides(self, wf: RunningApp, wf_env: WfEnv) -> None:
        ags = random_ags()
        event = submitted(ags, GEWERBE, ["ausweisdokument"])
        await wf_env.publish(event)
        await wait_state(wf_env, event["application_id"], "waiting")
        events = await outbox_of(wf_env.database_url, event["application_id"])
        payment = next(e for e in events if e["type"] == "workflow.notification.requested"
                       and e["data"]["kind"] == "zahlungsaufforderung")
        assert payment["data"]["amount_cents"] == 2600
        await wf_env.publish(follow_up(event, "application.payment.received",
                                       {"amount_cents": 2600, "method": "epaybl"}))
        case = await wait_state(wf_env, event["application_id"], "task")
        assert case["current_step"] == "pruefung"

        clerk = wf_env.signer.headers("sb-gewerbe", ["clerk"], [ags])
        tasks = (await wf.client.get("/v1/tasks", params={"queue": "gewerbe"}, headers=clerk)).json()
        assert [t["application_id"] for t in tasks] == [event["application_id"]]
        task_id = tasks[0]["task_id"]
        early = await wf.client.post(f"/v1/tasks/{task_id}/complete", json={"decision": "approved"}, headers=clerk)
        assert early.status_code == 409
        claimed = await wf.client.post(f"/v1/tasks/{task_id}/claim", headers=clerk)
        assert claimed.json()["assignee"] == "sb-gewerbe"
        other = wf_env.signer.headers("sb-andere", ["clerk"], [ags])
        assert (await wf.client.post(f"/v1/tasks/{task_id}/claim", headers=other)).status_code == 409
        bad = await wf.client.post(f"/v1/tasks/{task_id}/complete", json={"decision": "vielleicht"}, headers=clerk)
        assert bad.status_code == 422
        assert bad.headers["content-type"] == "application/problem+json"
        done = await wf.client.post(f"/v1/tasks/{task_id}/complete",
                                    json={"decision": "approved", "reason": "Angaben geprüft"}, headers=clerk)
        assert done.status_code == 200, done.text
        assert (done.json()["state"], done.json()["outcome"]) == ("closed", "approved")
        closed = [e for e in await outbox_of(wf_env.database_url, event["application_id"])
                  if e["type"] == "workflow.case.closed"]
        assert [c["data"]["outcome"] for c in closed] == ["approved"]

    async def test_offenbach_queue_rule_spreads_by_load_and_tasks_can_be_reassigned(
        self, wf: RunningApp, wf_env: WfEnv
    ) -> None:
        first = submitted(OFFENBACH, HUNDESTEUER, [])
        await wf_env.publish(first)
        case = await wait_state(wf_env, first["application_id"], "task")
        clerk = wf_env.signer.headers("sb-steuer", ["clerk"], [OFFENBACH])
        tasks = (await wf.client.get("/v1/tasks", params={"queue": "steueramt"}, headers=clerk)).json()
        mine = next(t for t in tasks if t["case_id"] == str(case["case_id"]))
        moved = await wf.client.post(f"/v1/tasks/{mine['task_id']}/reassign",
                                     json={"queue": "steueramt-leitung", "reason": "Sonderfall"}, headers=clerk)
        assert moved.status_code == 200, moved.text
        assert moved.json()["queue"] == "steueramt-leitung"
        assert (await wf.client.post(f"/v1/tasks/{mine['task_id']}/reassign", json={"reason": "leer"},
                                     headers=clerk)).status_code == 422
        events = await outbox_of(wf_env.database_url, first["application_id"])
        assert [e["data"]["queue"] for e in events if e["type"] == "workflow.task.assigned"] == [
            "steueramt", "steueramt-leitung"]

        # Gewerbe in Offenbach: two queues, the less loaded one gets the next task
        a, b = submitted(OFFENBACH, GEWERBE, ["ausweisdokument"]), submitted(OFFENBACH, GEWERBE, ["ausweisdokument"])
        queues = []
        for e in (a, b):
            await wf_env.publish(e, follow_up(e, "application.payment.received",
                                              {"amount_cents": 3000, "method": "paypal"}))
            await wait_state(wf_env, e["application_id"], "task")
            assigned = [x for x in await outbox_of(wf_env.database_url, e["application_id"])
                        if x["type"] == "workflow.task.assigned"]
            queues.append(assigned[0]["data"]["queue"])
        assert set(queues) <= {"gewerbe-a", "gewerbe-b"}
        fee = [x for x in await outbox_of(wf_env.database_url, a["application_id"])
               if x["type"] == "workflow.notification.requested" and x["data"]["kind"] == "zahlungsaufforderung"]
        assert fee[0]["data"]["amount_cents"] == 3000  # Offenbach's own fee from the table


class TestAuthentication:
    async def test_clerk_of_one_city_never_sees_or_touches_another_citys_case(
        self, wf: RunningApp, wf_env: WfEnv
    ) -> None:
        city_a, city_b = random_ags(), random_ags()
        event = submitted(city_a, HUNDESTEUER, [])
        await wf_env.publish(event)
        case = await wait_state(wf_env, event["application_id"], "task")
        stranger = wf_env.signer.headers("sb-b", ["clerk"], [city_b])
        owner = wf_env.signer.headers("sb-a", ["clerk"], [city_a])
        assert (await wf.client.get(f"/v1/cases/{case['case_id']}", headers=stranger)).status_code == 404
        assert (await wf.client.get(f"/v1/cases/{case['case_id']}/audit", headers=stranger)).status_code == 404
        assert (await wf.client.get("/v1/tasks", headers=stranger)).json() == []
        assert (await wf.client.get("/v1/tasks", params={"municipality": city_a},
                                    headers=stranger)).status_code == 403
        task = (await wf.client.get("/v1/tasks", headers=owner)).json()[0]
        for action in ("claim", "complete", "reassign"):
            body = {"decision": "approved"} if action == "complete" else {"queue": "x", "reason": "fremd"}
            resp = await wf.client.post(f"/v1/tasks/{task['task_id']}/{action}", json=body, headers=stranger)
            assert resp.status_code == 404, (action, resp.text)
        assert (await wf.client.get(f"/v1/cases/{case['case_id']}", headers=owner)).status_code == 200
        unchanged = await case_of(wf_env.database_url, event["application_id"])
        assert unchanged is not None
        assert unchanged["state"] == "task"

    async def test_missing_forged_expired_and_foreign_tokens_are_refused(self, wf: RunningApp, wf_env: WfEnv) -> None:
        ags = random_ags()
        resp = await wf.client.get("/v1/tasks")
        assert resp.status_code == 401
        assert resp.headers["content-type"] == "application/problem+json"
        assert resp.headers["www-authenticate"].startswith("Bearer")
        forger = Signer()
        forged = {"Authorization": f"Bearer {forger.token('x', ['clerk'], [ags])}"}
        forged_same_kid = Signer()
        forged_same_kid.kid = wf_env.signer.kid
        impostor = {"Authorization": f"Bearer {forged_same_kid.token('x', ['clerk'], [ags])}"}
        expired = {"Authorization": f"Bearer {wf_env.signer.token('x', ['clerk'], [ags], expires_in=-120)}"}
        other_issuer = {"Authorization": "Bearer " + wf_env.signer.token('x', ['clerk'], [ags],
                                                                          issuer="https://evil.example")}
        other_audience = {"Authorization": "Bearer " + wf_env.signer.token('x', ['clerk'], [ags], audience="other")}
        for headers in (forged, impostor, expired, other_issuer, other_audience):
            r = await wf.client.get("/v1/tasks", headers=headers)
            assert r.status_code == 401, r.text
        no_role = wf_env.signer.headers("x", ["buerger"], [ags])
        assert (await wf.client.get("/v1/tasks", headers=no_role)).status_code == 403


class TestFitConnectCallback:
    def callback(self, event: str, submission: str, **extra: Any) -> dict[str, Any]:
        return {"jti": str(uuid.uuid4()), "iss": "portal-test", "iat": int(time.time()),
                "sub": f"submission:{submission}", "txn": f"case:{uuid.uuid4()}", "events": {f"{FIT}{event}": {}},
                "municipality": OFFENBACH, "service": "99115005104000", **extra}

    async def test_submit_and_notify_callbacks_become_application_events(
        self, wf: RunningApp, wf_env: WfEnv
    ) -> None:
        submission = str(uuid.uuid4())
        auth = basic("portal-test", wf_env.platform_secret)
        submit = self.callback("submit-submission", submission, documents=["ausweisdokument"])
        for _ in range(2):  # the platform retries: applied once
            resp = await wf.client.post("/v1/callbacks/fit-connect", json=submit, headers=auth)
            assert resp.status_code == 202, resp.text
        assert resp.json()["application_event_type"] == "application.submitted"
        app_id = f"fit:{submission}"
        await wait_state(wf_env, app_id, "waiting")
        notify = self.callback("notify-submission", submission, documents=["wohnungsgeberbestaetigung"])
        assert (await wf.client.post("/v1/callbacks/fit-connect", json=notify, headers=auth)).status_code == 202
        create = self.callback("create-submission", submission)
        recorded = await wf.client.post("/v1/callbacks/fit-connect", json=create, headers=auth)
        assert recorded.json()["application_event_id"] is None
        case = await wait_state(wf_env, app_id, "closed")
        assert case["context"]["channel"] == "fit_connect"
        assert types(await outbox_of(wf_env.database_url, app_id)).count("workflow.case.opened") == 1

    async def test_bad_callbacks_get_problem_details(self, wf: RunningApp, wf_env: WfEnv) -> None:
        auth = basic("portal-test", wf_env.platform_secret)
        ok = self.callback("submit-submission", str(uuid.uuid4()))
        unknown = {**ok, "events": {f"{FIT}explode-submission": {}}}
        resp = await wf.client.post("/v1/callbacks/fit-connect", json=unknown, headers=auth)
        assert resp.status_code == 422
        assert resp.headers["content-type"] == "application/problem+json"
        assert "explode-submission" in resp.text
        bad_sub = {**ok, "sub": "submission:nope"}
        resp = await wf.client.post("/v1/callbacks/fit-connect", json=bad_sub, headers=auth)
        assert resp.json()["errors"][0]["loc"] == ["body", "sub"]
        wrong = await wf.client.post("/v1/callbacks/fit-connect", json=ok, headers=basic("portal-test", "falsch"))
        assert wrong.status_code == 401
        assert (await wf.client.post("/v1/callbacks/fit-connect", json=ok)).status_code == 401
        foreign = {**ok, "municipality": "06631009"}  # Fulda: not one of this platform's cities
        assert (await wf.client.post("/v1/callbacks/fit-connect", json=foreign, headers=auth)).status_code == 403
        assert await case_of(wf_env.database_url, ok["sub"].replace("submission:", "fit:")) is None


class TestClerkView:
    async def test_task_list_and_case_history_render_in_german_for_the_own_city_only(
        self, wf: RunningApp, wf_env: WfEnv
    ) -> None:
        ags, other = random_ags(), random_ags()
        event = submitted(ags, HUNDESTEUER, [])
        await wf_env.publish(event)
        case = await wait_state(wf_env, event["application_id"], "task")
        login = await wf.client.get("/sachbearbeitung")
        assert login.status_code == 401
        assert "Anmeldung" in login.text
        token = wf_env.signer.token("sb-view", ["clerk"], [ags])
        page = await wf.client.get("/sachbearbeitung", headers={"Authorization": f"Bearer {token}"})
        assert page.status_code == 200
        assert event["application_id"] in page.text
        assert "Steuer festsetzen, Hundesteuermarke ausgeben" in page.text
        history = await wf.client.get(f"/sachbearbeitung/vorgaenge/{case['case_id']}",
                                      headers={"Authorization": f"Bearer {token}"})
        assert history.status_code == 200
        assert "Eingangsbestätigung" in history.text
        assert "Aufgabe an die Warteschlange „Steueramt“ gegeben." in history.text
        stranger = wf_env.signer.token("sb-fremd", ["clerk"], [other])
        hidden = await wf.client.get(f"/sachbearbeitung/vorgaenge/{case['case_id']}",
                                     headers={"Authorization": f"Bearer {stranger}"})
        assert hidden.status_code == 404
        assert event["application_id"] not in (await wf.client.get(
            "/sachbearbeitung", headers={"Authorization": f"Bearer {stranger}"})).text
