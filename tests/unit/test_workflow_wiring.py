"""The workflow's Kafka subscriber wired with FastStream's `TestKafkaBroker`: a record published to the
application topic reaches the handler, which applies it through the engine to a fake unit of work; a record
that is not an application event goes to the rejected topic."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from faststream.kafka import KafkaBroker, TestKafkaBroker

from services.workflow.handlers import build_router
from services.workflow.model import CaseState
from services.workflow.settings import WorkflowSettings
from tests.unit.workflow_fakes import Harness, fake_lanes

HUND = "99102013104000"


def submitted(application_id: str, event_id: str | None = None) -> dict[str, Any]:
    return {"id": event_id or str(uuid.uuid4()), "type": "application.submitted", "source": "test-portal",
            "time": "2026-03-02T08:00:00+00:00", "municipality": "06531005", "service": HUND,
            "application_id": application_id, "data": {"channel": "online", "documents": []}}


def wired(h: Harness) -> tuple[KafkaBroker, WorkflowSettings]:
    settings = WorkflowSettings()
    broker = KafkaBroker()
    broker.include_router(build_router(settings, {"engine": h.engine, "units": fake_lanes(h.uow)}))
    return broker, settings


class TestApplicationEventsSubscriber:
    async def test_a_submission_on_the_topic_opens_its_case(self) -> None:
        h = Harness()
        broker, settings = wired(h)
        application_id = f"APP-{uuid.uuid4().hex[:8]}"
        async with TestKafkaBroker(broker) as br:
            await br.publish(orjson.dumps(submitted(application_id)), topic=settings.application_topic,
                             key=f"06531005:{HUND}".encode())
        case = h.case_of(application_id)
        assert case.state is CaseState.TASK
        assert h.task(case).queue == "steueramt"
        assert h.types(case)[0] == "workflow.case.opened"

    async def test_a_redelivered_record_is_applied_once(self) -> None:
        h = Harness()
        broker, settings = wired(h)
        application_id = f"APP-{uuid.uuid4().hex[:8]}"
        body = orjson.dumps(submitted(application_id, str(uuid.uuid4())))
        async with TestKafkaBroker(broker) as br:
            for _ in range(2):
                await br.publish(body, topic=settings.application_topic)
        case = h.case_of(application_id)
        assert h.types(case).count("workflow.case.opened") == 1
        assert len(h.uow.inbox) == 1

    async def test_a_record_that_is_no_application_event_is_rejected(self) -> None:
        h = Harness()
        broker, settings = wired(h)
        rejected: list[dict[str, Any]] = []

        @broker.subscriber(settings.application_rejected_topic)
        async def capture(body: dict[str, Any]) -> None:
            rejected.append(body)

        async with TestKafkaBroker(broker) as br:
            await br.publish(b'{"type": "application.submitted"}', topic=settings.application_topic)
        assert [r["reason"] for r in rejected] == ["invalid_event"]
        assert h.uow.cases == {}
        assert h.uow.inbox == set()
