"""Kafka cluster ids for `kafka.tools.StorageTool format -t ID`: an id starting with "-" would be taken for an
option by the tool's argument parser (one random id in 64 starts so)."""

from __future__ import annotations

import base64
import uuid

import pytest

from kp import stack


def test_an_id_that_would_start_with_a_dash_is_drawn_again(monkeypatch: pytest.MonkeyPatch) -> None:
    dashed = uuid.UUID(bytes=bytes([0xF8]) + bytes(15))  # base64 of 0b111110.. starts with "-"
    plain = uuid.UUID(bytes=bytes([0x10]) + bytes(15))
    assert base64.urlsafe_b64encode(dashed.bytes).decode().startswith("-")
    drawn = iter([dashed, plain])
    monkeypatch.setattr(stack.uuid, "uuid4", lambda: next(drawn))
    cluster_id = stack.base64_uuid()
    assert cluster_id == base64.urlsafe_b64encode(plain.bytes).decode().rstrip("=")
    assert len(cluster_id) == 22


def test_ids_are_random_and_never_start_with_a_dash() -> None:
    ids = {stack.base64_uuid() for _ in range(2000)}
    assert len(ids) == 2000
    assert not any(i.startswith("-") for i in ids)
