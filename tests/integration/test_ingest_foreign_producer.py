"""A foreign Kafka client (kcat) writing straight to `usage.events.v1`: the aggregator validates again and
routes bad records to the rejected topic, in the same format ingest uses."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator

import orjson
import pytest

from kp.local import LocalStack, ServiceProcess
from shared.kafka import USAGE_EVENTS, USAGE_REJECTED
from shared.rejections import RejectedEvent
from tests.factories import usage_event
from tests.ingest_keys import read_topic

pytestmark = pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is not installed (scripts/setup-system.sh)")


@pytest.fixture(scope="module")
def aggregator(stack: LocalStack) -> Iterator[ServiceProcess]:
    with stack.running("aggregator") as proc:
        yield proc


def kcat_produce(bootstrap: str, payload: bytes) -> None:
    subprocess.run(["kcat", "-P", "-b", bootstrap, "-t", USAGE_EVENTS.name, "-k", "foreign", "-X", "acks=all"],
                   input=payload, check=True, timeout=30)


class TestForeignProducer:
    async def test_unparseable_record_lands_in_rejected_topic(
        self, aggregator: ServiceProcess, kafka_bootstrap: str
    ) -> None:
        marker = uuid.uuid4().hex
        kcat_produce(kafka_bootstrap, f"not json {marker}".encode())
        [record] = await read_topic(kafka_bootstrap, USAGE_REJECTED.name, lambda v: marker in v.get("raw", ""), 1,
                                    timeout=60)
        parsed = RejectedEvent.model_validate(record)
        assert parsed.reason == "invalid_json"
        assert parsed.origin == "aggregator"
        assert parsed.topic == USAGE_EVENTS.name
        assert parsed.offset is not None

    async def test_contract_violation_lands_in_rejected_topic_with_paths(
        self, aggregator: ServiceProcess, kafka_bootstrap: str
    ) -> None:
        bad = usage_event()
        bad["municipality"] = "6413"
        kcat_produce(kafka_bootstrap, orjson.dumps(bad))
        [record] = await read_topic(kafka_bootstrap, USAGE_REJECTED.name,
                                    lambda v: v.get("event_id") == bad["id"] or bad["id"] in v.get("raw", ""), 1,
                                    timeout=60)
        parsed = RejectedEvent.model_validate(record)
        assert parsed.reason == "invalid_event"
        assert parsed.origin == "aggregator"
        assert any(e["loc"][-1] == "municipality" for e in parsed.errors)
