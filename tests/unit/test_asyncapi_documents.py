"""AsyncAPI documents of the Kafka services: every topic consumed and produced, each payload the JSON Schema of
its pydantic contract, valid for the AsyncAPI parser (`@asyncapi/parser`, run with node)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from jsonschema import Draft7Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from shared.events import application_event_adapter, usage_event_adapter, workflow_event_adapter
from tests.factories import usage_event

ROOT = Path(__file__).resolve().parents[2]
VALIDATE = ROOT / "tests" / "asyncapi_validate.mjs"


def _ingest() -> FastAPI:
    from services.ingest.app import create_app
    from services.ingest.settings import IngestSettings

    return create_app(IngestSettings())


def _aggregator() -> FastAPI:
    from services.aggregator.app import create_app
    from services.aggregator.settings import AggregatorSettings

    return create_app(AggregatorSettings())


def _workflow() -> FastAPI:
    from services.workflow.app import create_app
    from services.workflow.settings import WorkflowSettings

    return create_app(WorkflowSettings())


APPS: dict[str, Callable[[], FastAPI]] = {"ingest": _ingest, "aggregator": _aggregator, "workflow": _workflow}
# topic -> (action, payload schema name) each service's document must hold
EXPECTED = {
    "ingest": {"usage.events.v1": ("send", "UsageEvent"), "usage.events.rejected.v1": ("send", "RejectedEvent")},
    "aggregator": {"usage.events.v1": ("receive", "UsageEvent"), "workflow.events.v1": ("receive", "WorkflowEvent"),
                   "usage.events.rejected.v1": ("send", "RejectedEvent")},
    "workflow": {"application.events.v1": ("receive", "ApplicationEvent"),
                 "workflow.events.v1": ("send", "WorkflowEvent")},
}


async def document(make: Callable[[], FastAPI]) -> dict[str, Any]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=make()), base_url="http://svc") as client:
        r = await client.get("/asyncapi.json")
    assert r.status_code == 200
    doc: dict[str, Any] = r.json()
    return doc


def _payloads(doc: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """topic -> (action, schema name) as the document states it."""
    out: dict[str, tuple[str, str]] = {}
    for op in doc["operations"].values():
        channel = doc["channels"][op["channel"]["$ref"].rsplit("/", 1)[-1]]
        for ref in channel["messages"].values():
            message = doc["components"]["messages"][ref["$ref"].rsplit("/", 1)[-1]]
            out[channel["address"]] = (op["action"], message["payload"]["$ref"].rsplit("/", 1)[-1])
    return out


class TestAsyncApiDocuments:
    @pytest.mark.parametrize("service", sorted(APPS))
    async def test_every_topic_with_its_contract(self, service: str) -> None:
        doc = await document(APPS[service])
        payloads = _payloads(doc)
        for topic, expected in EXPECTED[service].items():
            assert payloads.get(topic) == expected, (topic, payloads)
        schemas = doc["components"]["schemas"]
        assert "EmptyPayload" not in schemas
        for _, name in payloads.values():
            assert schemas[name].get("oneOf") or schemas[name].get("properties"), name

    async def test_the_payload_schema_accepts_a_real_event_and_refuses_a_broken_one(self) -> None:
        doc = await document(_aggregator)
        # the AsyncAPI discriminator is a property name; as plain JSON Schema the oneOf decides alone
        registry: Registry[Any] = Registry().with_resource("urn:doc", Resource.from_contents(doc, DRAFT7))
        validator = Draft7Validator({"$ref": "urn:doc#/components/schemas/UsageEvent"}, registry=registry)
        event = json.loads(usage_event_adapter.dump_json(usage_event_adapter.validate_python(usage_event())))
        assert list(validator.iter_errors(event)) == []
        assert list(validator.iter_errors({**event, "municipality": 6413000}))
        assert list(validator.iter_errors({**event, "unbekannt": 1}))

    def test_contract_schemas_come_from_the_pydantic_adapters(self) -> None:
        from shared.asyncapi import CONTRACTS

        assert {name: adapter for name, adapter in CONTRACTS.values()} == {
            "UsageEvent": usage_event_adapter, "ApplicationEvent": application_event_adapter,
            "WorkflowEvent": workflow_event_adapter}


def _node(node: str, files: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([node, str(VALIDATE), *files], capture_output=True, text=True, timeout=120, cwd=ROOT,
                          check=False)


class TestAsyncApiParser:
    async def test_documents_are_valid_for_the_asyncapi_parser(self, tmp_path: Path) -> None:
        node = shutil.which("node")
        assert node, "node is required (make setup installs it)"
        files = []
        for name, make in sorted(APPS.items()):
            path = tmp_path / f"{name}.json"
            path.write_text(json.dumps(await document(make)))
            files.append(str(path))
        result = await asyncio.to_thread(_node, node, files)
        assert result.returncode == 0, result.stdout + result.stderr
        report = json.loads(result.stdout)
        assert set(report) == set(files)
        assert all(not diagnostics for diagnostics in report.values()), report

    async def test_the_parser_refuses_a_broken_document(self, tmp_path: Path) -> None:
        node = shutil.which("node")
        assert node
        doc = await document(_workflow)
        doc["channels"]["workflow-events-v1"]["messages"]["Message"] = {"$ref": "#/components/messages/fehlt"}
        path = tmp_path / "broken.json"
        path.write_text(json.dumps(doc))
        result = await asyncio.to_thread(_node, node, [str(path)])
        assert result.returncode == 1
