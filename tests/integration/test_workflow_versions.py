"""Definition versions: running cases stay on their version, new cases take the newest, published ones are frozen."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from kp.local import LocalStack
from services.workflow.adapters import ManualClock
from services.workflow.definitions import DefinitionError, Registry, parse_definition
from tests.integration.test_workflow_support import (
    WfEnv,
    case_of,
    outbox_of,
    random_ags,
    running_app,
    submitted,
    wf_env,
)
from tests.waiting import eventually

__all__ = ["wf_env"]

HUNDESTEUER = "99102013104000"


def version(n: int, *, second_step: str = "festsetzung", days: int = 30) -> dict[str, Any]:
    return {
        "name": "hundesteuer-pinning", "version": n, "service": HUNDESTEUER, "title": "Hundesteuer (Test)",
        "start": "eingang",
        "statutory": {"processing_days": days, "legal_basis": "§ 71b VwVfG"},
        "steps": [
            {"id": "eingang", "kind": "automatic", "title": "Eingang", "action": "acknowledge", "next": second_step},
            {"id": second_step, "kind": "human", "title": "Festsetzung", "assignment": {"queues": ["steuer"]},
             "decisions": {"approved": "akte", "rejected": "akte"}},
            {"id": "akte", "kind": "automatic", "title": "Akte", "action": "file", "next": "ende"},
            {"id": "ende", "kind": "end", "title": "Ende", "outcome": "decision"},
        ],
    }


def registry(*definitions: dict[str, Any]) -> Registry:
    return Registry([parse_definition(d, f"v{d['version']}") for d in definitions])


async def wait_task(env: WfEnv, application_id: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        return await case_of(env.database_url, application_id)

    case = await eventually(probe, lambda c: c is not None and c["state"] == "task")
    assert case is not None
    return case


class TestDefinitionPinning:
    async def test_running_case_keeps_its_version_while_new_cases_take_the_new_one(self, wf_env: WfEnv) -> None:
        ags = random_ags()
        clock = ManualClock(datetime.now(UTC))
        old = submitted(ags, HUNDESTEUER, [])
        async with running_app(wf_env, clock=clock, registry=registry(version(1))):
            await wf_env.publish(old)
            case = await wait_task(wf_env, old["application_id"])
        assert (case["definition_version"], case["current_step"]) == (1, "festsetzung")

        new = submitted(ags, HUNDESTEUER, [])
        v2 = version(2, second_step="pruefung_v2", days=10)
        async with running_app(wf_env, clock=clock, registry=registry(version(1), v2)) as wf:
            await wf_env.publish(new)
            fresh = await wait_task(wf_env, new["application_id"])
            assert (fresh["definition_version"], fresh["current_step"]) == (2, "pruefung_v2")
            ack = next(e for e in await outbox_of(wf_env.database_url, new["application_id"])
                       if e["type"] == "workflow.notification.requested")
            assert (datetime.fromisoformat(ack["data"]["deadline"]) - datetime.fromisoformat(ack["time"])).days == 10

            clerk = wf_env.signer.headers("sb", ["clerk"], [ags])
            tasks = (await wf.client.get("/v1/tasks", params={"queue": "steuer"}, headers=clerk)).json()
            old_task = next(t for t in tasks if t["case_id"] == str(case["case_id"]))
            assert old_task["step"] == "festsetzung"
            await wf.client.post(f"/v1/tasks/{old_task['task_id']}/claim", headers=clerk)
            done = await wf.client.post(f"/v1/tasks/{old_task['task_id']}/complete", json={"decision": "approved"},
                                        headers=clerk)
            assert done.status_code == 200, done.text
            assert (done.json()["definition_version"], done.json()["state"]) == (1, "closed")
        events = await outbox_of(wf_env.database_url, old["application_id"])
        assert {e["definition_version"] for e in events} == {1}

    async def test_changing_a_published_version_in_place_refuses_the_start(self, wf_env: WfEnv) -> None:
        v2 = version(2, second_step="pruefung_v2", days=10)
        async with running_app(wf_env, registry=registry(version(1), v2)):
            pass
        tampered = version(1, days=5)
        with pytest.raises(DefinitionError, match="differs from the version already in use"):
            async with running_app(wf_env, registry=registry(tampered, v2)):
                pass

    async def test_removing_a_version_with_open_cases_refuses_the_start(self, wf_env: WfEnv) -> None:
        ags = random_ags()
        event = submitted(ags, HUNDESTEUER, [])
        definitions = [version(1), version(2, second_step="pruefung_v2", days=10), version(3, days=12)]
        async with running_app(wf_env, registry=registry(*definitions)):
            await wf_env.publish(event)
            case = await wait_task(wf_env, event["application_id"])
        assert case["definition_version"] == 3
        with pytest.raises(DefinitionError, match=r"pinned to definition versions that are not deployed: "
                                                  r"hundesteuer-pinning v3"):
            async with running_app(wf_env, registry=registry(version(1), version(2, second_step="pruefung_v2",
                                                                                 days=10))):
                pass


class TestSkeletonCases:
    async def test_cases_of_the_walking_skeleton_are_closed_by_the_migration(
        self, stack: LocalStack, tmp_path: Path
    ) -> None:
        import shutil
        import uuid

        import asyncpg

        from shared.db import MIGRATIONS_DIR, migrate

        assert stack.database_url
        name = f"wf_{uuid.uuid4().hex[:10]}"
        admin = await asyncpg.connect(stack.database_url)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        url = stack.database_url.rsplit("/", 1)[0] + f"/{name}"
        for f in sorted(MIGRATIONS_DIR.glob("*.sql")):
            if f.name < "0301":
                shutil.copy(f, tmp_path / f.name)
        await migrate(url, tmp_path)
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(
                """INSERT INTO wf_cases (case_id, application_id, municipality, service, definition,
                                         definition_version, state, opened_at)
                   VALUES ($1, 'APP-skeleton', '06413000', '99115005104000', 'default', 1, 'acknowledged', now())""",
                uuid.uuid4())
            await migrate(url)
            row = await conn.fetchrow(
                "SELECT state, outcome, closed_at FROM wf_cases WHERE application_id = 'APP-skeleton'")
        finally:
            await conn.close()
        assert row is not None
        assert (row["state"], row["outcome"]) == ("closed", "acknowledged")
        assert row["closed_at"] is not None
