"""Ingest over HTTP against the real Kafka broker and PostgreSQL: batches, problems, rejections, tenants."""

from __future__ import annotations

import gzip
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import httpx
import orjson
import pytest

from shared.kafka import USAGE_EVENTS, USAGE_REJECTED
from tests.factories import MARBURG, OFFENBACH, usage_event
from tests.ingest_keys import bearer, ingest_key, read_topic, running_ingest


@pytest.fixture(scope="module")
async def client(kafka_bootstrap: str, database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with running_ingest(kafka_bootstrap, database_url, api_key_cache_s=0.0, max_batch_events=50,
                              max_body_bytes=64 * 1024) as c:
        yield c


@pytest.fixture
async def key(database_url: str) -> str:
    return await ingest_key(database_url, OFFENBACH, MARBURG)


def ids_of(batch: list[dict[str, Any]]) -> set[str]:
    return {e["id"] for e in batch}


class TestPostEvents:
    async def test_valid_batch_is_accepted_and_on_the_topic(
        self, client: httpx.AsyncClient, key: str, kafka_bootstrap: str
    ) -> None:
        batch = [usage_event("usage.session.started"), usage_event("usage.step.completed", municipality=MARBURG)]
        resp = await client.post("/v1/events", json=batch, headers=bearer(key))
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["accepted"] == [e["id"] for e in batch]
        assert body["rejected"] == []
        assert body["accepted_count"] == 2
        on_topic = await read_topic(kafka_bootstrap, USAGE_EVENTS.name, lambda v: v.get("id") in ids_of(batch), 2)
        assert {e["id"] for e in on_topic} == ids_of(batch)

    async def test_v1_page_views_are_accepted_and_published_as_v2(
        self, client: httpx.AsyncClient, key: str, kafka_bootstrap: str
    ) -> None:
        def view(referrer: str, version: int | Literal["omit"]) -> dict[str, Any]:
            return usage_event("usage.page.viewed", schema_version=version,
                               data={"page": "/start", "device": "mobile", "referrer": referrer})

        batch = [view("portal", 1), view("other", "omit"), view("social", 2), usage_event("usage.session.started")]
        refused = [view("social", 1), view("search", 3)]
        resp = await client.post("/v1/events", json=batch + refused, headers=bearer(key))
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["accepted"] == [e["id"] for e in batch]
        assert [(r["index"], r["reason"], r["reasons"][0]["type"]) for r in body["rejected"]] == [
            (4, "invalid_event", "v1_referrer"), (5, "invalid_event", "unknown_schema_version")]
        on_topic = {e["id"]: e for e in await read_topic(
            kafka_bootstrap, USAGE_EVENTS.name, lambda v: v.get("id") in ids_of(batch), len(batch))}
        assert [(on_topic[e["id"]]["schema_version"], on_topic[e["id"]]["data"].get("referrer")) for e in batch] == [
            (2, "portal"), (2, "other"), (2, "social"), (1, None)]

    async def test_gzip_body_is_accepted(self, client: httpx.AsyncClient, key: str) -> None:
        batch = [usage_event() for _ in range(3)]
        resp = await client.post("/v1/events", content=gzip.compress(orjson.dumps(batch)),
                                 headers={**bearer(key), "Content-Type": "application/json",
                                          "Content-Encoding": "gzip"})
        assert resp.status_code == 200, resp.text
        assert resp.json()["accepted"] == [e["id"] for e in batch]

    async def test_ndjson_accepts_good_lines_and_rejects_a_broken_one_alone(
        self, client: httpx.AsyncClient, key: str, kafka_bootstrap: str
    ) -> None:
        good = [usage_event(), usage_event()]
        marker = uuid.uuid4().hex
        lines = [orjson.dumps(good[0]), f'{{"broken {marker}'.encode(), orjson.dumps(good[1])]
        resp = await client.post("/v1/events", content=b"\n".join(lines) + b"\n",
                                 headers={**bearer(key), "Content-Type": "application/x-ndjson"})
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["accepted"] == [good[0]["id"], good[1]["id"]]
        assert [(r["index"], r["reason"]) for r in body["rejected"]] == [(1, "invalid_json")]
        dlq = await read_topic(kafka_bootstrap, USAGE_REJECTED.name, lambda v: marker in v.get("raw", ""), 1)
        assert dlq[0]["reason"] == "invalid_json"
        assert dlq[0]["index"] == 1

    async def test_gzip_ndjson_is_accepted(self, client: httpx.AsyncClient, key: str) -> None:
        batch = [usage_event() for _ in range(2)]
        body = gzip.compress(b"\n".join(orjson.dumps(e) for e in batch))
        resp = await client.post("/v1/events", content=body, headers={
            **bearer(key), "Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"})
        assert resp.json()["accepted"] == [e["id"] for e in batch]


def _problem(resp: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = resp.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"] == "/problems/" + code.replace("_", "-")
    assert body["title"]
    assert body["detail"]
    return body


class TestProblemDetails:
    async def test_unparseable_json_is_400(self, client: httpx.AsyncClient, key: str) -> None:
        resp = await client.post("/v1/events", content=b"[{", headers={**bearer(key),
                                                                       "Content-Type": "application/json"})
        _problem(resp, 400, "invalid_json")

    async def test_object_instead_of_array_is_400(self, client: httpx.AsyncClient, key: str) -> None:
        _problem(await client.post("/v1/events", json=usage_event(), headers=bearer(key)), 400, "not_a_batch")

    async def test_broken_gzip_is_400(self, client: httpx.AsyncClient, key: str) -> None:
        resp = await client.post("/v1/events", content=b"not gzip at all", headers={
            **bearer(key), "Content-Type": "application/json", "Content-Encoding": "gzip"})
        _problem(resp, 400, "invalid_gzip")

    async def test_too_many_events_is_413(self, client: httpx.AsyncClient, key: str) -> None:
        resp = await client.post("/v1/events", json=[usage_event() for _ in range(51)], headers=bearer(key))
        _problem(resp, 413, "payload_too_large")

    async def test_too_large_body_is_413(self, client: httpx.AsyncClient, key: str) -> None:
        resp = await client.post("/v1/events", content=b"[" + b" " * (64 * 1024) + b"]",
                                 headers={**bearer(key), "Content-Type": "application/json"})
        _problem(resp, 413, "payload_too_large")

    async def test_gzip_bomb_is_413(self, client: httpx.AsyncClient, key: str) -> None:
        resp = await client.post("/v1/events", content=gzip.compress(b"[" + b" " * (1024 * 1024) + b"]"),
                                 headers={**bearer(key), "Content-Type": "application/json",
                                          "Content-Encoding": "gzip"})
        _problem(resp, 413, "payload_too_large")

    async def test_wrong_content_type_is_415(self, client: httpx.AsyncClient, key: str) -> None:
        resp = await client.post("/v1/events", content=b"a,b", headers={**bearer(key), "Content-Type": "text/csv"})
        _problem(resp, 415, "unsupported_media_type")

    async def test_unknown_content_encoding_is_415(self, client: httpx.AsyncClient, key: str) -> None:
        resp = await client.post("/v1/events", content=b"[]", headers={
            **bearer(key), "Content-Type": "application/json", "Content-Encoding": "br"})
        _problem(resp, 415, "unsupported_content_encoding")

    async def test_missing_key_is_401(self, client: httpx.AsyncClient) -> None:
        resp = await client.post("/v1/events", json=[usage_event()])
        _problem(resp, 401, "unauthorized")
        assert resp.headers["www-authenticate"].startswith("Bearer")

    async def test_unknown_key_is_401(self, client: httpx.AsyncClient) -> None:
        _problem(await client.post("/v1/events", json=[usage_event()], headers=bearer("kpk_" + "x" * 43)),
                 401, "unauthorized")

    async def test_revoked_key_is_401(self, client: httpx.AsyncClient, database_url: str, db: Any) -> None:
        key = await ingest_key(database_url)
        assert (await client.post("/v1/events", json=[usage_event()], headers=bearer(key))).status_code == 200
        await db.execute("UPDATE ingest_api_keys SET revoked_at = now() WHERE key_prefix = $1", key[:12])
        _problem(await client.post("/v1/events", json=[usage_event()], headers=bearer(key)), 401, "unauthorized")

    async def test_rate_limit_is_429_with_retry_after(self, client: httpx.AsyncClient, database_url: str) -> None:
        key = await ingest_key(database_url, rate_per_s=0.5, burst=2)
        statuses = [(await client.post("/v1/events", json=[usage_event()], headers=bearer(key))).status_code
                    for _ in range(2)]
        assert statuses == [200, 200]
        resp = await client.post("/v1/events", json=[usage_event()], headers=bearer(key))
        _problem(resp, 429, "rate_limited")
        assert int(resp.headers["retry-after"]) >= 1

    async def test_unknown_route_is_a_problem_too(self, client: httpx.AsyncClient) -> None:
        _problem(await client.get("/v1/nothing-here"), 404, "not_found")


class TestRejections:
    """Every reason: in the response with index and id, and durable in the rejected topic with the raw event."""

    @pytest.mark.parametrize("reason", ["invalid_event", "forbidden_municipality", "from_future", "too_late"])
    async def test_reason_in_response_and_rejected_topic(
        self, client: httpx.AsyncClient, key: str, kafka_bootstrap: str, reason: str
    ) -> None:
        now = datetime.now(UTC)
        bad = {
            "invalid_event": usage_event(data={"channel": "fax", "device": "mobile"}),
            "forbidden_municipality": usage_event(municipality="06531005"),  # Gießen, outside the key's scope
            "from_future": usage_event(time=now + timedelta(hours=1)),
            "too_late": usage_event(time=now - timedelta(days=30)),
        }[reason]
        good = usage_event()
        resp = await client.post("/v1/events", json=[good, bad], headers=bearer(key))
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["accepted"] == [good["id"]]
        [rejection] = body["rejected"]
        assert (rejection["index"], rejection["id"], rejection["reason"]) == (1, bad["id"], reason)
        assert rejection["reasons"]
        [record] = await read_topic(kafka_bootstrap, USAGE_REJECTED.name, lambda v: v.get("event_id") == bad["id"], 1)
        assert record["reason"] == reason
        assert record["origin"] == "ingest"
        assert record["platform"] == "test-platform"
        assert record["index"] == 1
        assert orjson.loads(record["raw"]) == bad

    async def test_invalid_event_reports_pydantic_paths(self, client: httpx.AsyncClient, key: str) -> None:
        bad = usage_event()
        bad["municipality"] = "123"
        bad["unexpected"] = "field"
        resp = await client.post("/v1/events", json=[bad], headers=bearer(key))
        reasons = resp.json()["rejected"][0]["reasons"]
        assert {tuple(r["loc"]) for r in reasons} == {
            ("usage.session.started", "municipality"), ("usage.session.started", "unexpected")}

    async def test_raw_payload_in_rejected_topic_is_bounded(
        self, client: httpx.AsyncClient, key: str, kafka_bootstrap: str
    ) -> None:
        bad = usage_event(data={"channel": "web", "device": "mobile", "junk": "y" * 20000})
        await client.post("/v1/events", json=[bad], headers=bearer(key))
        [record] = await read_topic(kafka_bootstrap, USAGE_REJECTED.name, lambda v: v.get("event_id") == bad["id"], 1)
        assert record["raw_truncated"] is True
        assert len(record["raw"]) == 8192
        assert record["raw_bytes"] > 20000


class TestTenantIsolation:
    async def test_each_key_sends_only_for_its_own_municipalities(
        self, client: httpx.AsyncClient, database_url: str, kafka_bootstrap: str
    ) -> None:
        offenbach_key = await ingest_key(database_url, OFFENBACH, platform="platform-of")
        marburg_key = await ingest_key(database_url, MARBURG, platform="platform-mr")
        of_event, mr_event = usage_event(municipality=OFFENBACH), usage_event(municipality=MARBURG)
        as_of = (await client.post("/v1/events", json=[of_event, mr_event], headers=bearer(offenbach_key))).json()
        as_mr = (await client.post("/v1/events", json=[of_event, mr_event], headers=bearer(marburg_key))).json()
        assert as_of["accepted"] == [of_event["id"]]
        assert [(r["id"], r["reason"]) for r in as_of["rejected"]] == [(mr_event["id"], "forbidden_municipality")]
        assert as_mr["accepted"] == [mr_event["id"]]
        assert [(r["id"], r["reason"]) for r in as_mr["rejected"]] == [(of_event["id"], "forbidden_municipality")]
        records = await read_topic(kafka_bootstrap, USAGE_REJECTED.name,
                                   lambda v: v.get("event_id") in (of_event["id"], mr_event["id"]), 2)
        assert {(r["event_id"], r["platform"]) for r in records} == {
            (mr_event["id"], "platform-of"), (of_event["id"], "platform-mr")}


class TestPrivacyGuard:
    async def test_comment_is_scrubbed_before_it_reaches_kafka(
        self, client: httpx.AsyncClient, key: str, kafka_bootstrap: str
    ) -> None:
        event = usage_event("usage.feedback.given", data={
            "stars": 2, "comment": "Bitte um Rückruf: 0641 / 123 45-67 oder max.muster@example.org, danke"})
        resp = await client.post("/v1/events", json=[event], headers=bearer(key))
        assert resp.json()["accepted"] == [event["id"]]
        [stored] = await read_topic(kafka_bootstrap, USAGE_EVENTS.name, lambda v: v.get("id") == event["id"], 1)
        assert stored["data"]["comment"] == "Bitte um Rückruf: [phone] oder [email], danke"

    async def test_client_address_is_not_in_rejected_records(
        self, client: httpx.AsyncClient, key: str, kafka_bootstrap: str
    ) -> None:
        bad = usage_event(municipality="06531005")
        await client.post("/v1/events", json=[bad], headers={**bearer(key), "X-Forwarded-For": "203.0.113.7"})
        [record] = await read_topic(kafka_bootstrap, USAGE_REJECTED.name, lambda v: v.get("event_id") == bad["id"], 1)
        assert "203.0.113.7" not in orjson.dumps(record).decode()
        assert "127.0.0.1" not in orjson.dumps(record).decode()


class TestMetrics:
    async def test_accepted_and_rejected_are_counted_by_platform_and_reason(
        self, client: httpx.AsyncClient, database_url: str
    ) -> None:
        platform = f"metrics-{uuid.uuid4().hex[:8]}"
        key = await ingest_key(database_url, OFFENBACH, platform=platform)
        batch = [usage_event(), usage_event(), usage_event(municipality=MARBURG)]
        assert (await client.post("/v1/events", json=batch, headers=bearer(key))).status_code == 200
        text = (await client.get("/metrics")).text
        assert f'kp_ingest_events_accepted_total{{platform="{platform}"}} 2.0' in text
        assert f'kp_ingest_events_rejected_total{{platform="{platform}",reason="forbidden_municipality"}} 1.0' in text
        for name in ("kp_ingest_batch_size_events_bucket", "kp_ingest_request_duration_seconds_bucket",
                     "kp_ingest_kafka_produce_duration_seconds_bucket", "kp_ingest_requests_in_flight",
                     "kp_ingest_requests_total", "kp_ingest_request_body_bytes_bucket"):
            assert name in text


class TestKeyStoreDown:
    async def test_unreachable_key_store_is_503_not_500(self, kafka_bootstrap: str, database_url: str) -> None:
        from asgi_lifespan import LifespanManager

        from services.ingest.app import create_app
        from services.ingest.settings import IngestSettings

        key = await ingest_key(database_url)
        app = create_app(IngestSettings(kafka_bootstrap=kafka_bootstrap, database_url=database_url))
        async with LifespanManager(app, startup_timeout=60) as manager:
            await app.state.pool.close()  # PostgreSQL gone from this instance's point of view
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as http:
                resp = await http.post("/v1/events", json=[usage_event()], headers=bearer(key))
        body = _problem(resp, 503, "key_store_unavailable")
        assert resp.headers["retry-after"]
        assert body["detail"]


class TestHostilePayloads:
    async def test_thousands_of_unknown_fields_are_rejected_not_a_poison_batch(
        self, client: httpx.AsyncClient, key: str, kafka_bootstrap: str
    ) -> None:
        bad = usage_event()
        bad.update({f"f{i}": i for i in range(2000)})
        resp = await client.post("/v1/events", json=[bad], headers=bearer(key))
        assert resp.status_code == 200, resp.text
        [rejection] = resp.json()["rejected"]
        assert len(rejection["reasons"]) == 21
        [record] = await read_topic(kafka_bootstrap, USAGE_REJECTED.name, lambda v: v.get("event_id") == bad["id"], 1)
        assert record["errors"][-1]["type"] == "too_many_errors"


class TestPartitioning:
    async def test_events_land_on_kafkas_default_partition_for_their_key(
        self, client: httpx.AsyncClient, key: str, kafka_bootstrap: str
    ) -> None:
        from aiokafka import AIOKafkaConsumer
        from aiokafka.partitioner import DefaultPartitioner

        batch = [usage_event(municipality=m, service=s) for m in (OFFENBACH, MARBURG)
                 for s in ("99115005104000", "99050012104000")]
        assert (await client.post("/v1/events", json=batch, headers=bearer(key))).status_code == 200
        wanted = {e["id"]: f"{e['municipality']}:{e['service']}".encode() for e in batch}
        partitions = list(range(USAGE_EVENTS.partitions))
        consumer = AIOKafkaConsumer(USAGE_EVENTS.name, bootstrap_servers=kafka_bootstrap,
                                    auto_offset_reset="earliest", group_id=f"test-{uuid.uuid4().hex}")
        await consumer.start()
        seen: dict[str, int] = {}
        try:
            while len(seen) < len(wanted):
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for r in records:
                        event_id = orjson.loads(r.value).get("id")
                        if event_id in wanted:
                            seen[event_id] = r.partition
        finally:
            await consumer.stop()
        assert seen == {i: DefaultPartitioner()(k, partitions, partitions) for i, k in wanted.items()}
