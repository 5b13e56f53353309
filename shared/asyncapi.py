"""AsyncAPI 3.0 documents with the real message schemas, generated from the pydantic event contracts.

FastStream documents a channel's payload from the handler's parameter type; our consumers take raw records
(they decode inside the poison rule), so it would say `{"type": "null"}`, and topics written by plain
producers (ingest, the workflow outbox relay) would be missing. This module replaces each payload by the JSON
Schema of the topic's contract and adds a `send` operation for every produced topic the broker does not know.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import TypeAdapter

from shared.events import application_event_adapter, usage_event_adapter, workflow_event_adapter
from shared.kafka import APPLICATION_EVENTS, USAGE_EVENTS, WORKFLOW_EVENTS
from shared.rejections import RejectedEvent

REJECTED_SUFFIX = ".rejected.v1"
SCHEMA_REF = "#/components/schemas/{model}"

Contract = tuple[str, TypeAdapter[Any]]

REJECTED: Contract = ("RejectedEvent", TypeAdapter(RejectedEvent))
CONTRACTS: dict[str, Contract] = {
    USAGE_EVENTS.name: ("UsageEvent", usage_event_adapter),
    APPLICATION_EVENTS.name: ("ApplicationEvent", application_event_adapter),
    WORKFLOW_EVENTS.name: ("WorkflowEvent", workflow_event_adapter),
}


def contract_for(address: str, overrides: Mapping[str, Contract] | None = None) -> Contract | None:
    """The contract of a topic: an override, a known topic, or a rejected topic (`*.rejected.v1`)."""
    if overrides and address in overrides:
        return overrides[address]
    if address in CONTRACTS:
        return CONTRACTS[address]
    return REJECTED if address.endswith(REJECTED_SUFFIX) else None


def _asyncapi_schema(node: Any) -> Any:
    """pydantic's JSON Schema as an AsyncAPI Schema: the discriminator is the property name, not an object."""
    if isinstance(node, dict):
        out = {k: _asyncapi_schema(v) for k, v in node.items()}
        if isinstance(out.get("discriminator"), dict):
            out["discriminator"] = out["discriminator"]["propertyName"]
        return out
    if isinstance(node, list):
        return [_asyncapi_schema(v) for v in node]
    return node


def contract_schemas(name: str, adapter: TypeAdapter[Any]) -> dict[str, Any]:
    """The contract's schema under `name` plus every schema it refers to, keyed for `components.schemas`."""
    schema = adapter.json_schema(ref_template=SCHEMA_REF, mode="serialization")
    defs = schema.pop("$defs", {})
    out = {key: _asyncapi_schema(value) for key, value in defs.items()}
    out[name] = _asyncapi_schema({**schema, "title": schema.get("title", name)})
    return out


def _channel_key(address: str) -> str:
    return address.replace(".", "-")


def with_contracts(
    spec: dict[str, Any], produces: Sequence[str] = (), overrides: Mapping[str, Contract] | None = None,
) -> dict[str, Any]:
    """Add the produced topics missing from `spec` and set every channel's payload to its contract's schema."""
    channels: dict[str, Any] = spec.setdefault("channels", {})
    operations: dict[str, Any] = spec.setdefault("operations", {})
    components: dict[str, Any] = spec.setdefault("components", {})
    messages: dict[str, Any] = components.setdefault("messages", {})
    schemas: dict[str, Any] = components.setdefault("schemas", {})
    known = {c.get("address") for c in channels.values()}
    servers = [{"$ref": f"#/servers/{name}"} for name in spec.get("servers", {})]
    for address in produces:
        if address in known:
            continue
        key = _channel_key(address)
        message_key = f"{key}:Message"
        channels[key] = {
            "address": address, "servers": servers,
            "messages": {"Message": {"$ref": f"#/components/messages/{message_key}"}},
            "bindings": {"kafka": {"topic": address, "bindingVersion": "0.4.0"}},
        }
        messages[message_key] = {"title": message_key, "payload": {}}
        operations[f"{key}:send"] = {
            "action": "send", "channel": {"$ref": f"#/channels/{key}"},
            "messages": [{"$ref": f"#/channels/{key}/messages/Message"}],
        }
        known.add(address)
    for channel in channels.values():
        contract = contract_for(channel.get("address", ""), overrides)
        if contract is None:
            continue
        name, adapter = contract
        schemas.update(contract_schemas(name, adapter))
        for ref in channel.get("messages", {}).values():
            message = messages[ref["$ref"].rsplit("/", 1)[-1]]
            message["payload"] = {"$ref": SCHEMA_REF.format(model=name)}
            message["contentType"] = "application/json"
    empty = {"$ref": SCHEMA_REF.format(model="EmptyPayload")}
    if "EmptyPayload" in schemas and all(m.get("payload") != empty for m in messages.values()):
        del schemas["EmptyPayload"]  # FastStream's placeholder for raw-record handlers, now unused
    return spec
