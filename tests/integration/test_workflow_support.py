"""Shared fixtures and helpers of the workflow integration tests (no tests here).

Each test module gets its own database on the session's PostgreSQL server and its own topics on the
session's Kafka broker, so the workflow instances of other tests (e.g. the e2e system) never touch its rows.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import jwt
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from asgi_lifespan import LifespanManager
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI

from kp.local import LocalStack
from services.workflow.adapters import Clock, EAkte, FileSystemEAkte, ManualClock
from services.workflow.app import create_app
from services.workflow.definitions import Registry
from services.workflow.repository import init_connection
from services.workflow.settings import WorkflowSettings
from shared.db import migrate
from shared.events.workflow import workflow_event_adapter
from shared.kafka import Topic, ensure_topics
from shared.reference import configure_members, extra_members

ISSUER = "https://login.example-kommune.de/realms/kp"
AUDIENCE = "kommunal-pulse-workflow"


def random_ags() -> str:
    """An AGS no other test uses, accepted as an extra member by the contracts of this process (the workflow
    app runs in it), as `KP_EXTRA_MUNICIPALITIES` would make it."""
    ags = "99" + f"{uuid.uuid4().int % 10**6:06d}"
    municipalities, services = extra_members()
    configure_members({*municipalities, ags}, services)
    return ags


class Signer:
    """A locally generated RSA key; its public half is the JWKS the service trusts."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = uuid.uuid4().hex[:8]
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        self.jwks = json.dumps({"keys": [{**public, "kid": self.kid, "use": "sig", "alg": "RS256"}]})

    def token(self, sub: str, roles: list[str], municipalities: list[str], *, issuer: str = ISSUER,
              audience: str = AUDIENCE, expires_in: int = 600) -> str:
        now = int(time.time())
        claims = {"sub": sub, "iss": issuer, "aud": audience, "iat": now, "exp": now + expires_in,
                  "roles": roles, "municipalities": municipalities}
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": self.kid})

    def headers(self, sub: str, roles: list[str], municipalities: list[str]) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(sub, roles, municipalities)}"}


@dataclass
class WfEnv:
    database_url: str
    kafka_bootstrap: str
    application_topic: str
    workflow_topic: str
    eakte_root: Path
    signer: Signer
    platform_secret: str = field(default_factory=lambda: uuid.uuid4().hex)

    def settings(self, **overrides: Any) -> WorkflowSettings:
        import hashlib

        values: dict[str, Any] = {
            "environment": "test", "database_url": self.database_url, "kafka_bootstrap": self.kafka_bootstrap,
            "application_topic": self.application_topic, "workflow_topic": self.workflow_topic,
            "consumer_group": f"wf-test-{uuid.uuid4().hex[:8]}", "relay_interval_s": 0.05,
            "timer_interval_s": 0.05, "metrics_interval_s": 0.5, "eakte_root": self.eakte_root,
            "oidc_issuer": ISSUER, "oidc_jwks_json": self.signer.jwks, "db_pool_max": 5,
            "callback_platforms": {"portal-test": {
                "secret_sha256": hashlib.sha256(self.platform_secret.encode()).hexdigest(),
                "municipalities": ["06413000", "06534014"]}},
            "extra_municipalities": tuple(extra_members()[0]),
            "extra_services": tuple(extra_members()[1]),
        }
        values.update(overrides)
        return WorkflowSettings(**values)

    def env(self, **extra: str) -> dict[str, str]:
        """The same configuration as environment variables, for the service started as a process."""
        return {"KP_DATABASE_URL": self.database_url, "KP_APPLICATION_TOPIC": self.application_topic,
                "KP_WORKFLOW_TOPIC": self.workflow_topic, "KP_EAKTE_ROOT": str(self.eakte_root),
                "KP_TIMER_INTERVAL_S": "0.05", "KP_RELAY_INTERVAL_S": "0.05", "KP_LOG_JSON": "false",
                "KP_EXTRA_MUNICIPALITIES": ",".join(sorted(extra_members()[0])), **extra}

    async def publish(self, *events: dict[str, Any]) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.kafka_bootstrap, acks="all")
        await producer.start()
        try:
            for e in events:
                await producer.send_and_wait(self.application_topic, orjson.dumps(e),
                                             key=f"{e['municipality']}:{e['service']}".encode())
        finally:
            await producer.stop()


async def make_wf_env(stack: LocalStack, tmp: Path) -> WfEnv:
    assert stack.database_url
    assert stack.kafka_bootstrap
    name = f"wf_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(stack.database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = stack.database_url.rsplit("/", 1)[0] + f"/{name}"
    await migrate(url)
    suffix = uuid.uuid4().hex[:8]
    app_topic, wf_topic = f"application.events.test-{suffix}", f"workflow.events.test-{suffix}"
    await ensure_topics(stack.kafka_bootstrap, (Topic(app_topic, 3), Topic(wf_topic, 3)))
    return WfEnv(url, stack.kafka_bootstrap, app_topic, wf_topic, tmp / "eakte", Signer())


@pytest.fixture(scope="module")
async def wf_env(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> WfEnv:
    return await make_wf_env(stack, tmp_path_factory.mktemp("wf"))


@dataclass
class RunningApp:
    app: FastAPI
    client: httpx.AsyncClient
    clock: Clock
    eakte: EAkte


@asynccontextmanager
async def running_app(env: WfEnv, *, clock: Clock | None = None, eakte: EAkte | None = None,
                      registry: Registry | None = None, **settings: Any) -> AsyncIterator[RunningApp]:
    clock = clock or ManualClock(datetime.now(UTC))
    eakte = eakte or FileSystemEAkte(env.eakte_root)
    app = create_app(env.settings(**settings), clock=clock, eakte=eakte, registry=registry)
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=60) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://workflow") as client:
            yield RunningApp(app, client, clock, eakte)


def submitted(municipality: str, service: str, documents: list[str], application_id: str | None = None,
              event_id: str | None = None) -> dict[str, Any]:
    return {
        "id": event_id or str(uuid.uuid4()), "type": "application.submitted", "source": "test-portal",
        "time": datetime.now(UTC).isoformat(), "municipality": municipality, "service": service,
        "application_id": application_id or f"APP-{uuid.uuid4().hex[:12]}",
        "data": {"channel": "online", "documents": documents},
    }


def follow_up(base: dict[str, Any], kind: str, data: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
    return {**base, "id": event_id or str(uuid.uuid4()), "type": kind, "time": datetime.now(UTC).isoformat(),
            "data": data}


async def case_of(db_url: str, application_id: str) -> dict[str, Any] | None:
    conn = await asyncpg.connect(db_url)
    await init_connection(conn)
    try:
        row = await conn.fetchrow("SELECT * FROM wf_cases WHERE application_id = $1", application_id)
        return dict(row) if row else None
    finally:
        await conn.close()


async def outbox_of(db_url: str, application_id: str) -> list[dict[str, Any]]:
    """The workflow events of one application, in emission order."""
    conn = await asyncpg.connect(db_url)
    try:
        rows = await conn.fetch(
            """SELECT e FROM wf_outbox, unnest(coalesce(payloads, ARRAY[payload])) WITH ORDINALITY AS u(e, n)
               WHERE convert_from(e, 'UTF8')::jsonb->>'application_id' = $1 ORDER BY id, n""", application_id)
        # Every event must be what the v1 contract says (the engine serialises them itself).
        return [workflow_event_adapter.validate_json(r["e"]).model_dump(mode="json") for r in rows]
    finally:
        await conn.close()


async def audit_actions(db_url: str, application_id: str) -> list[str]:
    conn = await asyncpg.connect(db_url)
    try:
        rows = await conn.fetch(
            "SELECT a.action FROM wf_audit a JOIN wf_cases c USING (case_id) WHERE c.application_id = $1 "
            "ORDER BY a.id", application_id)
        return [r["action"] for r in rows]
    finally:
        await conn.close()


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]
