"""The platform client against a scripted transport: batching, gzip, retries with the same ids, raising."""

from __future__ import annotations

import gzip
from typing import Any

import httpx
import orjson
import pytest

from shared.client import EventsRejected, IngestClient, RequestRefused, RetriesExhausted
from tests.factories import usage_event


class Script:
    """Answers requests from a list of (status, body, headers); records every request body."""

    def __init__(self, answers: list[tuple[int, Any, dict[str, str]]]) -> None:
        self.answers = answers
        self.bodies: list[list[dict[str, Any]]] = []
        self.headers: list[httpx.Headers] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        raw = request.content
        if request.headers.get("content-encoding") == "gzip":
            raw = gzip.decompress(raw)
        batch = orjson.loads(raw)
        self.bodies.append(batch)
        self.headers.append(request.headers)
        status, body, headers = self.answers.pop(0) if self.answers else (200, None, {})
        if body is None:
            body = {"accepted": [e["id"] for e in batch], "rejected": []}
        if body == "raise":
            raise httpx.ConnectError("refused")
        return httpx.Response(status, json=body, headers=headers)


def client_for(script: Script, sleeps: list[float], **kw: Any) -> IngestClient:
    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    return IngestClient("http://ingest", "kpk_test", transport=httpx.MockTransport(script), sleep=sleep, **kw)


class TestSend:
    async def test_batches_and_gzips_with_bearer_key(self) -> None:
        script, sleeps = Script([]), []
        events = [usage_event() for _ in range(5)]
        async with client_for(script, sleeps, batch_size=2) as client:
            result = await client.send(events)
        assert [len(b) for b in script.bodies] == [2, 2, 1]
        assert result.accepted == [e["id"] for e in events]
        assert script.headers[0]["authorization"] == "Bearer kpk_test"
        assert script.headers[0]["content-encoding"] == "gzip"

    async def test_retries_reuse_the_same_ids_and_honour_retry_after(self) -> None:
        script, sleeps = Script([(503, {"code": "event_store_unavailable"}, {"Retry-After": "3"}),
                                 (0, "raise", {}), (429, {}, {"Retry-After": "1"})]), []
        event = usage_event()
        del event["id"]  # the client chooses one, once
        async with client_for(script, sleeps) as client:
            result = await client.send([event])
        assert len(script.bodies) == 4
        assert len({b[0]["id"] for b in script.bodies}) == 1
        assert result.accepted == [script.bodies[0][0]["id"]]
        assert result.attempts == 4
        assert sleeps[0] >= 3
        assert sleeps[2] >= 1

    async def test_gives_up_after_max_attempts(self) -> None:
        script, sleeps = Script([(503, {}, {})] * 3), []
        async with client_for(script, sleeps, max_attempts=3) as client:
            with pytest.raises(RetriesExhausted):
                await client.send([usage_event()])
        assert len(sleeps) == 2

    async def test_refused_request_raises_without_retry(self) -> None:
        script, sleeps = Script([(401, {"code": "unauthorized", "detail": "no"}, {})]), []
        async with client_for(script, sleeps) as client:
            with pytest.raises(RequestRefused) as err:
                await client.send([usage_event()])
        assert err.value.status == 401
        assert len(script.bodies) == 1

    async def test_rejected_events_raise_after_the_rest_is_accepted(self) -> None:
        good, bad = usage_event(), usage_event()
        answer = {"accepted": [good["id"]], "rejected": [{"index": 1, "id": bad["id"], "reason": "too_late"}]}
        script, sleeps = Script([(200, answer, {})]), []
        async with client_for(script, sleeps) as client:
            with pytest.raises(EventsRejected) as err:
                await client.send([good, bad])
        assert err.value.result.accepted == [good["id"]]
        assert "too_late" in str(err.value)

    async def test_add_flushes_full_batches_and_exit_flushes_the_rest(self) -> None:
        script, sleeps = Script([]), []
        async with client_for(script, sleeps, batch_size=3) as client:
            for _ in range(4):
                await client.add(usage_event())
            assert [len(b) for b in script.bodies] == [3]
        assert [len(b) for b in script.bodies] == [3, 1]

    async def test_splits_by_bytes(self) -> None:
        script, sleeps = Script([]), []
        async with client_for(script, sleeps, max_batch_bytes=600) as client:
            await client.send([usage_event() for _ in range(4)])
        assert len(script.bodies) > 1
        assert sum(len(b) for b in script.bodies) == 4
