"""Workflow engine through the real Kafka broker and PostgreSQL, time driven by a manual clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from services.workflow.adapters import FileSystemEAkte, ManualClock
from tests.integration.test_workflow_support import (
    RunningApp,
    WfEnv,
    audit_actions,
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

WOHNSITZ = "99115005104000"
GEWERBE = "99050012104000"
BAU = "99012070006001"
WOHNSITZ_DOCS = ["wohnungsgeberbestaetigung", "ausweisdokument"]
BAU_DOCS = ["lageplan", "bauzeichnungen", "baubeschreibung", "standsicherheitsnachweis"]


@pytest.fixture(scope="module")
async def wf(wf_env: WfEnv) -> AsyncIterator[RunningApp]:
    async with running_app(wf_env, clock=ManualClock(datetime.now(UTC)),
                           eakte=FileSystemEAkte(wf_env.eakte_root)) as running:
        yield running


def clock(wf: RunningApp) -> ManualClock:
    assert isinstance(wf.clock, ManualClock)
    return wf.clock


async def wait_case(env: WfEnv, application_id: str, check: Any, timeout: float = 30) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        return await case_of(env.database_url, application_id)

    result = await eventually(probe, lambda c: c is not None and check(c), timeout=timeout)
    assert result is not None
    return result


class TestWohnsitzanmeldung:
    async def test_complete_application_runs_from_submission_to_filing(self, wf: RunningApp, wf_env: WfEnv) -> None:
        ags = random_ags()
        event = submitted(ags, WOHNSITZ, WOHNSITZ_DOCS)
        consumer = AIOKafkaConsumer(wf_env.workflow_topic, bootstrap_servers=wf_env.kafka_bootstrap,
                                    auto_offset_reset="earliest", group_id=f"t-{event['application_id']}")
        await consumer.start()
        try:
            await wf_env.publish(event)
            case = await wait_case(wf_env, event["application_id"], lambda c: c["state"] == "closed")
            seen: list[dict[str, Any]] = []

            async def from_kafka() -> list[dict[str, Any]]:
                for records in (await consumer.getmany(timeout_ms=300)).values():
                    seen.extend(p for r in records if (p := orjson.loads(r.value))["application_id"]
                                == event["application_id"])
                return seen

            await eventually(from_kafka, lambda s: "workflow.case.closed" in types(s), timeout=30)
        finally:
            await consumer.stop()

        assert case["outcome"] == "filed"
        assert case["definition"] == "wohnsitz-anmeldung"
        events = await outbox_of(wf_env.database_url, event["application_id"])
        assert types(seen) == types(events)
        completed = [e["data"]["step"] for e in events if e["type"] == "workflow.step.completed"]
        assert completed == ["eingang", "vollstaendigkeit", "akte", "bescheid"]
        ack = next(e for e in events if e["type"] == "workflow.notification.requested")
        assert ack["data"]["kind"] == "eingangsbestaetigung"
        assert ack["data"]["consequence"] == "none"
        assert datetime.fromisoformat(ack["data"]["deadline"]) > datetime.fromisoformat(ack["time"])
        closed = events[-1]
        assert closed["type"] == "workflow.case.closed"
        assert closed["data"]["outcome"] == "filed"
        stored = FileSystemEAkte(wf_env.eakte_root).stored()
        key = f"{case['case_id']}:akte"
        assert stored[key]["calls"] == 1
        assert stored[key]["record"]["documents"] == sorted(WOHNSITZ_DOCS)
        actions = await audit_actions(wf_env.database_url, event["application_id"])
        assert actions[0] == "case_opened"
        assert "eingangsbestaetigung" in actions
        assert actions[-1] == "case_closed"


class TestNachforderung:
    async def test_missing_documents_are_requested_reminded_and_the_deadline_hands_over_to_a_clerk(
        self, wf: RunningApp, wf_env: WfEnv
    ) -> None:
        ags = random_ags()
        event = submitted(ags, WOHNSITZ, ["ausweisdokument"])
        await wf_env.publish(event)
        app_id = event["application_id"]
        await wait_case(wf_env, app_id, lambda c: c["current_step"] == "warten_unterlagen")
        events = await outbox_of(wf_env.database_url, app_id)
        request = [e for e in events if e["type"] == "workflow.notification.requested"][-1]
        assert request["data"]["kind"] == "nachforderung"
        assert request["data"]["documents"] == ["wohnungsgeberbestaetigung"]

        clock(wf).advance(timedelta(days=10, seconds=1))  # reminder is due 4 days before the 14-day deadline

        async def notes() -> list[str]:
            return [e["data"]["kind"] for e in await outbox_of(wf_env.database_url, app_id)
                    if e["type"] == "workflow.notification.requested"]

        await eventually(notes, lambda n: "erinnerung" in n)
        assert (await case_of(wf_env.database_url, app_id) or {})["state"] == "waiting"

        clock(wf).advance(timedelta(days=4))
        case = await wait_case(wf_env, app_id, lambda c: c["current_step"] == "klaerung")
        assert case["state"] == "task"
        events = await outbox_of(wf_env.database_url, app_id)
        assert {"deadline": "warten_unterlagen"} in [e["data"] for e in events
                                                     if e["type"] == "workflow.deadline.breached"]
        assert [e["data"]["queue"] for e in events if e["type"] == "workflow.task.assigned"] == ["meldewesen"]
        assert (await notes()).count("erinnerung") == 1

    async def test_documents_arriving_in_time_complete_the_case(self, wf: RunningApp, wf_env: WfEnv) -> None:
        event = submitted(random_ags(), WOHNSITZ, ["ausweisdokument"])
        await wf_env.publish(event)
        await wait_case(wf_env, event["application_id"], lambda c: c["state"] == "waiting")
        clock(wf).advance(timedelta(days=3))
        await wf_env.publish(follow_up(event, "application.documents.added",
                                       {"documents": ["wohnungsgeberbestaetigung"]}))
        case = await wait_case(wf_env, event["application_id"], lambda c: c["state"] == "closed")
        assert case["outcome"] == "filed"
        events = await outbox_of(wf_env.database_url, event["application_id"])
        assert "workflow.deadline.breached" not in types(events)


class TestDuplicatesAndOrder:
    async def test_duplicate_deliveries_count_once(self, wf: RunningApp, wf_env: WfEnv) -> None:
        event = submitted(random_ags(), WOHNSITZ, ["ausweisdokument"])
        docs = follow_up(event, "application.documents.added", {"documents": ["wohnungsgeberbestaetigung"]})
        other_id_same_application = {**event, "id": "00000000-0000-4000-8000-" + event["id"][-12:]}
        await wf_env.publish(event, event, other_id_same_application, docs, docs)
        await wait_case(wf_env, event["application_id"], lambda c: c["state"] == "closed")
        events = await outbox_of(wf_env.database_url, event["application_id"])
        assert types(events).count("workflow.case.opened") == 1
        assert types(events).count("workflow.case.closed") == 1
        actions = await audit_actions(wf_env.database_url, event["application_id"])
        assert actions.count("documents_added") == 1
        assert actions.count("duplicate_submission_ignored") == 1

    async def test_events_before_the_submission_are_kept_and_applied_on_open(
        self, wf: RunningApp, wf_env: WfEnv
    ) -> None:
        event = submitted(random_ags(), WOHNSITZ, ["ausweisdokument"])
        docs = follow_up(event, "application.documents.added", {"documents": ["wohnungsgeberbestaetigung"]})
        await wf_env.publish(docs)
        await wf_env.publish(event)
        case = await wait_case(wf_env, event["application_id"], lambda c: c["state"] == "closed")
        assert case["outcome"] == "filed"
        events = await outbox_of(wf_env.database_url, event["application_id"])
        kinds = [e["data"]["kind"] for e in events if e["type"] == "workflow.notification.requested"]
        assert "nachforderung" not in kinds

    async def test_withdrawal_closes_the_case_and_later_events_change_nothing(
        self, wf: RunningApp, wf_env: WfEnv
    ) -> None:
        event = submitted(random_ags(), WOHNSITZ, [])
        await wf_env.publish(event)
        await wait_case(wf_env, event["application_id"], lambda c: c["state"] == "waiting")
        await wf_env.publish(follow_up(event, "application.withdrawn", {}),
                             follow_up(event, "application.documents.added", {"documents": WOHNSITZ_DOCS}))
        case = await wait_case(wf_env, event["application_id"], lambda c: c["state"] == "closed")
        assert case["outcome"] == "withdrawn"
        await eventually(lambda: audit_actions(wf_env.database_url, event["application_id"]),
                         lambda a: "event_after_close_ignored" in a)
        events = await outbox_of(wf_env.database_url, event["application_id"])
        assert types(events).count("workflow.case.closed") == 1


class TestFailingEAkte:
    async def test_filing_is_retried_then_parked_then_resumed_by_an_operator(
        self, wf: RunningApp, wf_env: WfEnv
    ) -> None:
        ags = random_ags()
        wf_env.eakte_root.mkdir(parents=True, exist_ok=True)
        blocker = wf_env.eakte_root / ags
        blocker.write_text("not a directory")  # the municipality's folder cannot be created: filing fails
        event = submitted(ags, WOHNSITZ, WOHNSITZ_DOCS)
        await wf_env.publish(event)
        app_id = event["application_id"]
        case = await wait_case(wf_env, app_id, lambda c: c["state"] == "retrying")
        assert case["current_step"] == "akte"
        for attempt in range(2, 6):
            clock(wf).advance(timedelta(minutes=30))  # beyond the longest backoff with jitter
            case = await wait_case(wf_env, app_id, lambda c, a=attempt: c["attempts"] >= a)
        assert case["state"] == "parked"
        assert "E-Akte store not writable" in case["last_error"]
        events = await outbox_of(wf_env.database_url, app_id)
        assert [e["data"]["attempt"] for e in events if e["type"] == "workflow.step.failed"] == [1, 2, 3, 4, 5]
        assert types(events).count("workflow.case.parked") == 1

        operator = wf_env.signer.headers("op-1", ["operator"], [ags])
        view = (await wf.client.get(f"/v1/cases/{case['case_id']}", headers=operator)).json()
        assert (view["state"], view["current_step"], view["attempts"]) == ("parked", "akte", 5)
        assert "not writable" in view["last_error"]
        parked = (await wf.client.get("/v1/cases", params={"state": "parked"}, headers=operator)).json()
        assert [c["case_id"] for c in parked] == [str(case["case_id"])]

        blocker.unlink()
        resp = await wf.client.post(f"/v1/cases/{case['case_id']}/retry", json={"reason": "Ablage repariert"},
                                    headers=operator)
        assert resp.status_code == 200, resp.text
        assert resp.json()["state"] == "closed"
        stored = FileSystemEAkte(wf_env.eakte_root).stored()
        assert stored[f"{case['case_id']}:akte"]["calls"] == 1
        again = await wf.client.post(f"/v1/cases/{case['case_id']}/retry", json={"reason": "nochmal"},
                                     headers=operator)
        assert again.status_code == 409
        assert again.headers["content-type"] == "application/problem+json"
        audit = (await wf.client.get(f"/v1/cases/{case['case_id']}/audit", headers=operator)).json()
        retry = next(a for a in audit if a["action"] == "operator_retry")
        assert retry["actor"] == "operator:op-1"
        assert retry["detail"]["reason"] == "Ablage repariert"
        assert retry["before"] == {"state": "parked", "step": "akte"}

    async def test_operator_can_skip_a_parked_step_with_a_reason(self, wf: RunningApp, wf_env: WfEnv) -> None:
        ags = random_ags()
        wf_env.eakte_root.mkdir(parents=True, exist_ok=True)
        (wf_env.eakte_root / ags).write_text("blocked")
        event = submitted(ags, WOHNSITZ, WOHNSITZ_DOCS)
        await wf_env.publish(event)
        case = await wait_case(wf_env, event["application_id"], lambda c: c["state"] == "retrying")
        operator = wf_env.signer.headers("op-2", ["operator"], [ags])
        clerk = wf_env.signer.headers("clerk-2", ["clerk"], [ags])
        denied = await wf.client.post(f"/v1/cases/{case['case_id']}/skip", json={"reason": "egal"}, headers=clerk)
        assert denied.status_code == 403
        resp = await wf.client.post(f"/v1/cases/{case['case_id']}/skip",
                                    json={"reason": "Papierakte angelegt"}, headers=operator)
        assert resp.status_code == 200, resp.text
        assert resp.json()["state"] == "closed"
        assert "operator_skip" in await audit_actions(wf_env.database_url, event["application_id"])


class TestAuditTrail:
    async def test_audit_rows_cannot_be_changed_or_deleted(self, wf: RunningApp, wf_env: WfEnv) -> None:
        import asyncpg

        event = submitted(random_ags(), WOHNSITZ, WOHNSITZ_DOCS)
        await wf_env.publish(event)
        await wait_case(wf_env, event["application_id"], lambda c: c["state"] == "closed")
        conn = await asyncpg.connect(wf_env.database_url)
        try:
            with pytest.raises(asyncpg.RaiseError, match="append-only"):
                await conn.execute("UPDATE wf_audit SET actor = 'someone' WHERE action = 'case_closed'")
            with pytest.raises(asyncpg.RaiseError, match="append-only"):
                await conn.execute("DELETE FROM wf_audit")
        finally:
            await conn.close()


class TestGenehmigungsfiktion:
    async def test_clerk_is_alerted_before_and_the_permit_is_deemed_granted_after_three_months(
        self, wf: RunningApp, wf_env: WfEnv
    ) -> None:
        ags = random_ags()
        event = submitted(ags, BAU, BAU_DOCS)
        await wf_env.publish(event)
        app_id = event["application_id"]
        case = await wait_case(wf_env, app_id, lambda c: c["current_step"] == "pruefung")
        due = datetime.fromisoformat(case["context"]["fiction_due"])
        opened = case["opened_at"]
        assert 89 <= (due - opened).days <= 92
        clerk = wf_env.signer.headers("bau-1", ["clerk"], [ags])
        view = (await wf.client.get(f"/v1/cases/{case['case_id']}", headers=clerk)).json()
        assert {t["name"] for t in view["timers"]} == {"fiction", "fiction_alert"}
        assert view["next_timer"]["name"] == "fiction_alert"
        ack = next(e for e in await outbox_of(wf_env.database_url, app_id)
                   if e["type"] == "workflow.notification.requested")
        assert ack["data"]["consequence"] == "genehmigungsfiktion"

        clock(wf).current = due - timedelta(days=13)

        async def outbox() -> list[dict[str, Any]]:
            return await outbox_of(wf_env.database_url, app_id)

        events = await eventually(outbox, lambda ev: "workflow.deadline.approaching" in types(ev))
        alert = next(e for e in events if e["type"] == "workflow.deadline.approaching")
        assert alert["data"]["deadline"] == "genehmigungsfiktion"
        assert (await case_of(wf_env.database_url, app_id) or {})["state"] == "task"

        clock(wf).current = due + timedelta(seconds=1)
        case = await wait_case(wf_env, app_id, lambda c: c["state"] == "closed")
        assert case["outcome"] == "approved"
        events = await outbox()
        assert {"deadline": "genehmigungsfiktion"} in [e["data"] for e in events
                                                       if e["type"] == "workflow.deadline.breached"]
        assert "fiktion_eingetreten" in [e["data"]["kind"] for e in events
                                         if e["type"] == "workflow.notification.requested"]
        tasks = (await wf.client.get("/v1/tasks", params={"status": "cancelled"}, headers=clerk)).json()
        assert [t["step"] for t in tasks] == ["pruefung"]


class TestEscalation:
    async def test_overdue_clerk_task_is_reminded_then_escalated_to_the_lead_queue(
        self, wf: RunningApp, wf_env: WfEnv
    ) -> None:
        ags = random_ags()
        event = submitted(ags, "99102013104000", [])  # Hundesteuer: 21 days, reminder 5 days before
        await wf_env.publish(event)
        app_id = event["application_id"]
        case = await wait_case(wf_env, app_id, lambda c: c["state"] == "task")
        clock(wf).advance(timedelta(days=16, seconds=1))

        async def outbox() -> list[dict[str, Any]]:
            return await outbox_of(wf_env.database_url, app_id)

        events = await eventually(outbox, lambda ev: "workflow.deadline.approaching" in types(ev))
        assert [e["data"]["deadline"] for e in events if e["type"] == "workflow.deadline.approaching"] == [
            "festsetzung"]
        clock(wf).advance(timedelta(days=5))
        events = await eventually(outbox, lambda ev: "workflow.deadline.breached" in types(ev))
        assert [e["data"]["queue"] for e in events if e["type"] == "workflow.task.assigned"] == [
            "steueramt", "steueramt-leitung"]
        clerk = wf_env.signer.headers("lead", ["clerk"], [ags])
        tasks = (await wf.client.get("/v1/tasks", params={"queue": "steueramt-leitung"}, headers=clerk)).json()
        assert [t["case_id"] for t in tasks] == [str(case["case_id"])]
        assert (await case_of(wf_env.database_url, app_id) or {})["state"] == "task"


class TestFictionExtension:
    async def test_clerk_extends_the_fiction_deadline_once(self, wf: RunningApp, wf_env: WfEnv) -> None:
        ags = random_ags()
        event = submitted(ags, BAU, BAU_DOCS)
        await wf_env.publish(event)
        case = await wait_case(wf_env, event["application_id"], lambda c: c["current_step"] == "pruefung")
        due = datetime.fromisoformat(case["context"]["fiction_due"])
        clerk = wf_env.signer.headers("bau-2", ["clerk"], [ags])

        async def decide(decision: str) -> Any:
            task = (await wf.client.get("/v1/tasks", headers=clerk)).json()[0]
            await wf.client.post(f"/v1/tasks/{task['task_id']}/claim", headers=clerk)
            return await wf.client.post(f"/v1/tasks/{task['task_id']}/complete",
                                        json={"decision": decision, "reason": "Gutachten ausstehend"},
                                        headers=clerk)

        extended = await decide("extend")
        assert extended.status_code == 200, extended.text
        body = extended.json()
        assert body["current_step"] == "pruefung"
        new_due = datetime.fromisoformat(body["context"]["fiction_due"])
        assert 58 <= (new_due - due).days <= 62
        timers = {t["name"]: datetime.fromisoformat(t["due_at"].replace("Z", "+00:00")) for t in body["timers"]}
        assert timers["fiction"] == new_due
        again = await decide("extend")
        assert again.status_code == 409
        assert "only once" in again.json()["detail"]
        approved = await decide("approved")
        assert approved.json()["state"] == "closed"
        assert approved.json()["outcome"] == "approved"
        assert approved.json()["timers"] == []
