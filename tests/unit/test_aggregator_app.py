"""Wiring of the aggregator app without Kafka: channels in the AsyncAPI document and the metric names."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from services.aggregator.app import create_app
from services.aggregator.settings import AggregatorSettings
from shared.rejections import REASONS


async def get(settings: AggregatorSettings, path: str) -> httpx.Response:
    app = create_app(settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://aggregator") as client:
        return await client.get(path)


class TestAsyncApi:
    async def test_both_subscribers_and_the_rejected_publisher_are_documented(self) -> None:
        doc = (await get(AggregatorSettings(), "/asyncapi.json")).json()
        addresses = {c["address"] for c in doc["channels"].values()}
        assert addresses == {"usage.events.v1", "workflow.events.v1", "usage.events.rejected.v1",
                             "workflow.events.rejected.v1"}

    async def test_workflow_subscriber_can_be_switched_off_and_topics_renamed(self) -> None:
        settings = AggregatorSettings(consume_workflow=False, usage_topic="usage.test", rejected_topic="rej.test")
        doc = (await get(settings, "/asyncapi.json")).json()
        assert {c["address"] for c in doc["channels"].values()} == {"usage.test", "rej.test"}


class TestMetrics:
    async def test_the_documented_metric_families_are_exported(self) -> None:
        text = (await get(AggregatorSettings(), "/metrics")).text
        families = {f.name.removesuffix("_total") for f in text_string_to_metric_families(text)}
        for name in ("consumer_lag", "batch_size", "events", "fold_seconds", "commit_seconds",
                     "duplicates_skipped", "late_corrections", "rejected", "batch_failures", "dedup_ids_deleted",
                     "batch_splits"):
            assert f"kp_aggregator_{name}" in families, name

    async def test_rejected_series_exist_at_zero_for_every_topic_and_reason(self) -> None:
        text = (await get(AggregatorSettings(), "/metrics")).text
        samples = {(s.labels["topic"], s.labels["reason"]): s.value for f in text_string_to_metric_families(text)
                   if f.name == "kp_aggregator_rejected" for s in f.samples if s.name.endswith("_total")}
        assert set(samples) == {(t, r) for t in ("usage.events.v1", "workflow.events.v1") for r in REASONS}
        assert set(samples.values()) == {0.0}
