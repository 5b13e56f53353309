"""The clerk view against the real database and broker: German task list with filters and paging, case page
in sentences, claim and decide through forms, sessions with CSRF tokens and expiry, the login's state check.

The identity provider is not needed here: pages are opened with bearer tokens of the test signer or with a
session row made by `sessions.create`; the full browser login through Keycloak is in
`test_workflow_clerk_browser.py`.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from services.workflow import labels, sessions
from services.workflow.adapters import FileSystemEAkte, ManualClock
from services.workflow.auth import Principal
from tests.integration.test_workflow_support import (
    RunningApp,
    WfEnv,
    case_of,
    random_ags,
    running_app,
    submitted,
    wf_env,
)
from tests.waiting import eventually

__all__ = ["wf_env"]

HUNDESTEUER = "99102013104000"
BAUGENEHMIGUNG = "99012070006001"
GEWERBE = "99050012104000"
FORM = {"content-type": "application/x-www-form-urlencoded"}


@pytest.fixture(scope="module")
async def wf(wf_env: WfEnv) -> AsyncIterator[RunningApp]:
    async with running_app(wf_env, clock=ManualClock(datetime.now(UTC)), eakte=FileSystemEAkte(wf_env.eakte_root),
                           session_idle_s=600) as running:
        yield running


async def tasks_of(env: WfEnv, ags: str) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(env.database_url)
    try:
        rows = await conn.fetch("SELECT t.*, c.application_id FROM wf_tasks t JOIN wf_cases c USING (case_id) "
                                "WHERE t.municipality = $1 ORDER BY t.created_at", ags)
        return [dict(r) for r in rows]
    finally:
        await conn.close()


async def open_tasks(env: WfEnv, ags: str, count: int) -> list[dict[str, Any]]:
    return await eventually(lambda: tasks_of(env, ags), lambda ts: len(ts) >= count, timeout=60)


async def session_cookie(env: WfEnv, wf: RunningApp, principal: Principal) -> str:
    conn = await asyncpg.connect(env.database_url)
    try:
        return await sessions.create(conn, wf.app.state.settings, principal, "Sabine Becker", "id-token",
                                     datetime.now(UTC))
    finally:
        await conn.close()


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "page has no CSRF field"
    return match.group(1)


class TestTaskList:
    async def test_filters_and_pages_list_only_the_own_citys_tasks(self, wf: RunningApp, wf_env: WfEnv) -> None:
        ags, other = random_ags(), random_ags()
        mine = [submitted(ags, HUNDESTEUER, []) for _ in range(21)] + [submitted(ags, GEWERBE, [])]
        foreign = submitted(other, HUNDESTEUER, [])
        await wf_env.publish(*mine, foreign)
        await open_tasks(wf_env, ags, 21)
        await open_tasks(wf_env, other, 1)
        clerk = wf_env.signer.headers("sb-liste", ["clerk"], [ags])

        first = await wf.client.get("/sachbearbeitung", params={"queue": "steueramt"}, headers=clerk)
        assert first.status_code == 200
        assert "21 Aufgaben" in first.text
        assert "Seite 1 von 2" in first.text
        assert first.text.count("Hundesteuer Anmeldung</a>") == 20
        assert "Steueramt" in first.text
        assert "steueramt</" not in first.text  # a label, not the slug
        second = await wf.client.get("/sachbearbeitung", params={"queue": "steueramt", "seite": "2"}, headers=clerk)
        assert second.text.count("Hundesteuer Anmeldung</a>") == 1
        assert "Seite 2 von 2" in second.text
        shown = set(re.findall(r"APP-[0-9a-f]{12}", first.text + second.text))
        assert shown == {e["application_id"] for e in mine[:21]}
        assert foreign["application_id"] not in first.text + second.text
        assert '<option value="steueramt" selected>Steueramt</option>' in first.text

        mine_only = await wf.client.get("/sachbearbeitung", params={"status": "meine"}, headers=clerk)
        assert "Keine Aufgaben für diese Auswahl." in mine_only.text

    async def test_every_task_has_a_due_date_also_without_a_step_deadline(self, wf: RunningApp,
                                                                           wf_env: WfEnv) -> None:
        ags = random_ags()
        event = submitted(ags, BAUGENEHMIGUNG, ["lageplan", "bauzeichnungen", "baubeschreibung",
                                                "standsicherheitsnachweis"])
        await wf_env.publish(event)
        (task,) = await open_tasks(wf_env, ags, 1)
        case = await case_of(wf_env.database_url, event["application_id"])
        assert case is not None
        assert task["step"] == "pruefung"
        fiction_due = datetime.fromisoformat(case["context"]["fiction_due"])
        assert task["due_at"] == min(case["opened_at"] + timedelta(days=90), fiction_due)
        page = await wf.client.get("/sachbearbeitung", headers=wf_env.signer.headers("sb-bau", ["clerk"], [ags]))
        assert labels.local_date(task["due_at"]) in page.text


class TestCasePage:
    async def test_claim_and_decide_through_the_forms_and_read_the_history_as_sentences(
        self, wf: RunningApp, wf_env: WfEnv
    ) -> None:
        ags = random_ags()
        event = submitted(ags, GEWERBE, ["ausweisdokument"])
        await wf_env.publish(event)
        await eventually(lambda: case_of(wf_env.database_url, event["application_id"]),
                         lambda c: c is not None and c["state"] == "waiting", timeout=60)
        case = await case_of(wf_env.database_url, event["application_id"])
        assert case is not None
        clerk = wf_env.signer.headers("sb-fall", ["clerk"], [ags])
        page = await wf.client.get(f"/sachbearbeitung/vorgaenge/{case['case_id']}", headers=clerk)
        assert page.status_code == 200
        assert "26,00\u00a0€" in page.text  # the fee of the definition, in euro
        assert "fee_cents" not in page.text
        assert "{'" not in page.text
        assert "Gebühr festgesetzt: 26,00\u00a0€; Zahlung angefordert." in page.text
        assert re.search(r"\d\d\.\d\d\.\d{4}, \d\d:\d\d Uhr", page.text)
        assert case["definition"] not in page.text  # the title, not the definition id
        assert "Gewerbe Anmeldung" in page.text

    async def test_session_forms_need_the_csrf_token(self, wf: RunningApp, wf_env: WfEnv) -> None:
        ags = random_ags()
        event = submitted(ags, HUNDESTEUER, [])
        await wf_env.publish(event)
        (task,) = await open_tasks(wf_env, ags, 1)
        cookie = await session_cookie(wf_env, wf, Principal("sb-sitzung", frozenset({"clerk"}), frozenset({ags})))
        jar = {"Cookie": f"{sessions.SESSION_COOKIE}={cookie}"}
        listing = await wf.client.get("/sachbearbeitung", headers=jar)
        assert listing.status_code == 200
        assert "Angemeldet: Sabine Becker" in listing.text
        token = csrf_of(listing.text)

        claim = f"/sachbearbeitung/aufgaben/{task['task_id']}/uebernehmen"
        forged = await wf.client.post(claim, headers={**FORM, **jar},
                                      content="csrf=falsch")
        assert forged.status_code == 403
        missing = await wf.client.post(claim, headers={**FORM, **jar},
                                       content="")
        assert missing.status_code == 403
        assert (await tasks_of(wf_env, ags))[0]["status"] == "open"

        claimed = await wf.client.post(claim, headers={**FORM, **jar},
                                       content=f"csrf={token}")
        assert claimed.status_code == 303
        case_page = await wf.client.get(claimed.headers["location"], headers=jar)
        assert "Sie haben die Aufgabe übernommen." in case_page.text
        assert "Aufgabe übernommen." in case_page.text
        done = await wf.client.post(f"/sachbearbeitung/aufgaben/{task['task_id']}/erledigen", headers={**FORM, **jar},
                                    content=f"csrf={token}&entscheidung=approved&begruendung=passt")
        assert done.status_code == 303
        assert (await tasks_of(wf_env, ags))[0]["decision"] == "approved"
        history = await wf.client.get(f"/sachbearbeitung/vorgaenge/{task['case_id']}", headers=jar)
        assert "Entscheidung: genehmigt. Begründung: passt" in history.text
        assert "Sie" in history.text

    async def test_logout_ends_the_session_and_expired_sessions_are_refused(self, wf: RunningApp,
                                                                             wf_env: WfEnv) -> None:
        ags = random_ags()
        cookie = await session_cookie(wf_env, wf, Principal("sb-ende", frozenset({"clerk"}), frozenset({ags})))
        jar = {"Cookie": f"{sessions.SESSION_COOKIE}={cookie}"}
        token = csrf_of((await wf.client.get("/sachbearbeitung", headers=jar)).text)
        refused = await wf.client.post("/sachbearbeitung/abmelden", headers={**FORM, **jar}, content="csrf=x")
        assert refused.status_code == 403
        out = await wf.client.post("/sachbearbeitung/abmelden", headers={**FORM, **jar}, content=f"csrf={token}")
        assert out.status_code == 303
        # The test issuer is not reachable, so there is no provider logout: straight to the local page.
        assert out.headers["location"] == "/sachbearbeitung/abgemeldet"
        after = await wf.client.get("/sachbearbeitung", headers=jar)
        assert after.status_code == 401
        assert "Sitzung ist abgelaufen" in after.text

        idle = await session_cookie(wf_env, wf, Principal("sb-idle", frozenset({"clerk"}), frozenset({ags})))
        conn = await asyncpg.connect(wf_env.database_url)
        try:
            await conn.execute("UPDATE wf_sessions SET last_seen_at = now() - interval '11 minutes' "
                               "WHERE session_hash = $1", sessions.digest(idle))
        finally:
            await conn.close()
        stale = await wf.client.get("/sachbearbeitung", headers={"Cookie": f"{sessions.SESSION_COOKIE}={idle}"})
        assert stale.status_code == 401


class TestReassign:
    async def test_team_lead_moves_a_task_to_another_queue_of_its_step_with_a_reason(
        self, wf: RunningApp, wf_env: WfEnv
    ) -> None:
        ags = random_ags()
        await wf_env.publish(submitted(ags, HUNDESTEUER, []))
        (task,) = await open_tasks(wf_env, ags, 1)
        path = f"/sachbearbeitung/aufgaben/{task['task_id']}/umverteilen"
        lead = {**FORM, **wf_env.signer.headers("leitung", ["clerk", "team_lead"], [ags])}
        clerk = {**FORM, **wf_env.signer.headers("sb", ["clerk"], [ags])}
        page = await wf.client.get(f"/sachbearbeitung/vorgaenge/{task['case_id']}", headers=lead)
        assert '<option value="steueramt-leitung">Steueramt (Leitung)</option>' in page.text
        assert "Umverteilen" not in (await wf.client.get(f"/sachbearbeitung/vorgaenge/{task['case_id']}",
                                                          headers=clerk)).text

        assert (await wf.client.post(path, headers=clerk, content="queue=steueramt-leitung&begruendung=x")
                ).status_code == 403
        assert (await wf.client.post(path, headers=lead, content="queue=bauaufsicht&begruendung=x")).status_code == 422
        assert (await wf.client.post(path, headers=lead, content="queue=steueramt-leitung")).status_code == 422
        assert (await tasks_of(wf_env, ags))[0]["queue"] == "steueramt"

        moved = await wf.client.post(path, headers=lead, content="queue=steueramt-leitung&begruendung=Urlaub")
        assert moved.status_code == 303
        assert (await tasks_of(wf_env, ags))[0]["queue"] == "steueramt-leitung"
        history = await wf.client.get(moved.headers["location"], headers=lead)
        assert "Die Aufgabe ist umverteilt." in history.text
        assert "Aufgabe von „Steueramt“ an „Steueramt (Leitung)“ umverteilt. Begründung: Urlaub" in history.text


class TestLogin:
    async def test_callback_without_the_browsers_login_is_refused(self, wf: RunningApp) -> None:
        answer = await wf.client.get("/sachbearbeitung/anmeldung", params={"code": "abc", "state": "geraten"},
                                     headers={"Cookie": f"{sessions.LOGIN_COOKIE}=unbekannt"})
        assert answer.status_code == 400
        assert "Anmeldung wurde abgebrochen" in answer.text

    async def test_login_page_is_german_and_offers_the_provider(self, wf: RunningApp) -> None:
        page = await wf.client.get("/sachbearbeitung/vorgaenge/00000000-0000-0000-0000-000000000000")
        assert page.status_code == 401
        assert 'lang="de"' in page.text
        assert "/sachbearbeitung/anmelden?ziel=%2Fsachbearbeitung%2Fvorgaenge%2F" in page.text
        assert "JWT" not in page.text
