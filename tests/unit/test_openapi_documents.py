"""Every service's `/openapi.json` is a valid OpenAPI document (openapi-spec-validator), operationIds unique."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from openapi_spec_validator import validate

from shared.openapi import HTTP_METHODS, unique_operation_ids


def _publisher() -> FastAPI:
    from services.publisher.app import create_app
    from services.publisher.settings import PublisherSettings

    return create_app(PublisherSettings())


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


APPS: dict[str, Callable[[], FastAPI]] = {
    "publisher": _publisher, "ingest": _ingest, "aggregator": _aggregator, "workflow": _workflow,
}


async def _document(make: Callable[[], FastAPI]) -> dict[str, Any]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=make()), base_url="http://svc") as client:
        r = await client.get("/openapi.json")
    assert r.status_code == 200
    doc: dict[str, Any] = r.json()
    return doc


def _operation_ids(doc: dict[str, Any]) -> list[str]:
    return [op["operationId"] for item in doc["paths"].values() for m, op in item.items() if m in HTTP_METHODS]


class TestOpenApiDocuments:
    @pytest.mark.parametrize("service", sorted(APPS))
    async def test_document_is_valid_openapi(self, service: str) -> None:
        doc = await _document(APPS[service])
        validate(doc)  # raises on any violation, duplicate operationIds included
        ids = _operation_ids(doc)
        assert ids
        assert [i for i, n in Counter(ids).items() if n > 1] == []

    async def test_get_and_head_of_one_route_get_their_own_ids(self) -> None:
        doc = await _document(_publisher)
        catalog = doc["paths"]["/catalog"]
        assert catalog["get"]["operationId"] != catalog["head"]["operationId"]
        action = doc["paths"]["/api/3/action/{action}"]
        assert action["get"]["operationId"] != action["post"]["operationId"]


class TestUniqueOperationIds:
    def test_repeated_ids_are_split_by_method_and_single_ones_kept(self) -> None:
        schema = {"paths": {
            "/a": {"get": {"operationId": "read_a_get"}, "head": {"operationId": "read_a_get"}},
            "/b": {"post": {"operationId": "write_b_post"}, "parameters": []},
        }}
        unique_operation_ids(schema)
        assert schema["paths"]["/a"]["get"]["operationId"] == "read_a_get"  # type: ignore[index]
        assert schema["paths"]["/a"]["head"]["operationId"] == "read_a_head"  # type: ignore[index]
        assert schema["paths"]["/b"]["post"]["operationId"] == "write_b_post"  # type: ignore[index]

    def test_the_validator_refuses_a_document_with_duplicates(self) -> None:
        from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

        op = {"operationId": "same", "responses": {"200": {"description": "ok"}}}
        doc = {"openapi": "3.1.0", "info": {"title": "t", "version": "1"},
               "paths": {"/a": {"get": dict(op)}, "/b": {"get": dict(op)}}}
        with pytest.raises(OpenAPIValidationError):
            validate(doc)
