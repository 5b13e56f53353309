"""Platform mappings over HTTP and the `kp apikey` commands, against the real Kafka broker and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from typer.testing import CliRunner

from kp.cli import app as cli
from shared.kafka import USAGE_EVENTS, USAGE_REJECTED
from tests.factories import MARBURG, OFFENBACH
from tests.ingest_keys import bearer, ingest_key, read_topic, running_ingest


@pytest.fixture(scope="module")
async def client(kafka_bootstrap: str, database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with running_ingest(kafka_bootstrap, database_url, api_key_cache_s=0.0) as c:
        yield c


def civento(event: str, **extra: Any) -> dict[str, Any]:
    return {"callbackId": f"cb-{uuid.uuid4().hex}", "ereignis": event, "zeitpunkt": int(time.time() * 1000),
            "mandant": {"ags": OFFENBACH}, "prozess": {"leikaSchluessel": "99115005104000"},
            "prozessInstanzId": f"PI-{uuid.uuid4().hex[:12]}", **extra}


class TestPlatformEvents:
    async def test_mapped_callbacks_are_validated_and_produced_like_events(
        self, client: httpx.AsyncClient, database_url: str, kafka_bootstrap: str
    ) -> None:
        key = await ingest_key(database_url, OFFENBACH)
        started = civento("PROZESS_GESTARTET", client={"geraet": "SMARTPHONE"})
        unmappable = civento("UNBEKANNT")
        foreign = civento("PROZESS_EINGEREICHT", dauerSekunden=300, mandant={"ags": MARBURG})
        resp = await client.post("/v1/platforms/civento/events", json=[started, unmappable, foreign],
                                 headers=bearer(key))
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert len(body["accepted"]) == 1
        assert [(r["index"], r["reason"]) for r in body["rejected"]] == [
            (1, "mapping_failed"), (2, "forbidden_municipality")]
        [event] = await read_topic(kafka_bootstrap, USAGE_EVENTS.name, lambda v: v.get("id") == body["accepted"][0], 1)
        assert event["type"] == "usage.session.started"
        assert event["source"] == "civento"
        assert event["data"] == {"channel": "web", "device": "mobile"}
        [dlq] = await read_topic(kafka_bootstrap, USAGE_REJECTED.name,
                                 lambda v: unmappable["callbackId"] in v.get("raw", ""), 1)
        assert dlq["reason"] == "mapping_failed"
        assert dlq["errors"][0]["loc"] == ["type"]

    async def test_resent_callback_keeps_its_event_id(self, client: httpx.AsyncClient, database_url: str) -> None:
        key = await ingest_key(database_url, OFFENBACH)
        callback = civento("PROZESS_ABGEBROCHEN")
        url = "/v1/platforms/civento/events"
        ids = [(await client.post(url, json=callback, headers=bearer(key))).json()["accepted"] for _ in range(2)]
        assert ids[0] == ids[1]
        assert len(ids[0]) == 1

    async def test_unknown_platform_is_404_problem(self, client: httpx.AsyncClient, database_url: str) -> None:
        key = await ingest_key(database_url)
        resp = await client.post("/v1/platforms/nobody/events", json={}, headers=bearer(key))
        assert resp.status_code == 404
        assert resp.json()["code"] == "unknown_platform"

    async def test_platforms_are_listed(self, client: httpx.AsyncClient) -> None:
        items = (await client.get("/v1/platforms")).json()["items"]
        assert {"civento", "formengine"} <= {i["platform"] for i in items}


class TestApikeyCommands:
    def test_create_list_revoke(self, database_url: str, kafka_bootstrap: str) -> None:
        env = {"KP_DATABASE_URL": database_url, "KP_KAFKA_BOOTSTRAP": kafka_bootstrap}
        runner = CliRunner()
        platform = f"cli-{uuid.uuid4().hex[:8]}"
        created = runner.invoke(cli, ["apikey", "create", "--platform", platform, "-m", OFFENBACH, "-m", MARBURG,
                                      "--rate", "5"], env=env)
        assert created.exit_code == 0, created.output
        lines = dict(line.split(None, 1) for line in created.output.splitlines() if line.startswith(("id", "key ")))
        key_id, plain = lines["id"].strip(), lines["key"].strip()
        listed = runner.invoke(cli, ["apikey", "list"], env=env)
        assert key_id in listed.output
        assert plain not in listed.output
        revoked = runner.invoke(cli, ["apikey", "revoke", key_id], env=env)
        assert revoked.exit_code == 0, revoked.output
        assert key_id not in runner.invoke(cli, ["apikey", "list"], env=env).output
        assert key_id in runner.invoke(cli, ["apikey", "list", "--all"], env=env).output
        assert runner.invoke(cli, ["apikey", "revoke", key_id], env=env).exit_code == 1

    def test_only_the_hash_is_stored(self, database_url: str, kafka_bootstrap: str) -> None:
        env = {"KP_DATABASE_URL": database_url, "KP_KAFKA_BOOTSTRAP": kafka_bootstrap}
        out = CliRunner().invoke(cli, ["apikey", "create", "--platform", "hash-check", "-m", OFFENBACH], env=env)
        plain = next(line.split()[1] for line in out.output.splitlines() if line.startswith("key "))

        async def stored() -> asyncpg.Record | None:
            conn = await asyncpg.connect(database_url)
            try:
                return await conn.fetchrow("SELECT * FROM ingest_api_keys WHERE key_prefix = $1", plain[:12])
            finally:
                await conn.close()

        row = asyncio.run(stored())
        assert row is not None
        assert plain not in {str(v) for v in row.values()}

    def test_invalid_municipality_is_refused(self, database_url: str, kafka_bootstrap: str) -> None:
        env = {"KP_DATABASE_URL": database_url, "KP_KAFKA_BOOTSTRAP": kafka_bootstrap}
        out = CliRunner().invoke(cli, ["apikey", "create", "--platform", "x", "-m", "123"], env=env)
        assert out.exit_code == 2
