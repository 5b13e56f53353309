"""HTTP E-Akte adapter and JWKS over HTTP, against a small local E-Akte/issuer server; the metrics endpoint."""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from services.workflow.adapters import HttpEAkte, ManualClock
from tests.integration.test_workflow_support import (
    WfEnv,
    case_of,
    outbox_of,
    random_ags,
    running_app,
    submitted,
    types,
    wf_env,
)
from tests.waiting import eventually

__all__ = ["wf_env"]

WOHNSITZ = "99115005104000"
DOCS = ["wohnungsgeberbestaetigung", "ausweisdokument"]


class EAkteServer:
    """An E-Akte with the documented HTTP contract: PUT /documents/{key} is idempotent per key."""

    def __init__(self, jwks: str) -> None:
        self.calls: Counter[str] = Counter()
        self.documents: dict[str, dict[str, Any]] = {}
        self.fail_next = 0
        self.jwks = jwks
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                return

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path == "/jwks.json":
                    self._send(200, json.loads(outer.jwks))
                else:
                    self._send(404, {})

            def do_PUT(self) -> None:
                key = self.path.removeprefix("/documents/")
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                outer.calls[key] += 1
                if self.headers.get("Idempotency-Key") != key:
                    self._send(400, {"error": "idempotency key header missing"})
                elif outer.fail_next > 0:
                    outer.fail_next -= 1
                    self._send(503, {"error": "maintenance"})
                else:
                    outer.documents.setdefault(key, body)
                    self._send(200, {"reference": f"akte:{key}"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> EAkteServer:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def eakte_server(wf_env: WfEnv) -> Iterator[EAkteServer]:
    with EAkteServer(wf_env.signer.jwks) as server:
        yield server


class TestHttpEAkte:
    async def test_unavailable_e_akte_is_retried_and_files_once(self, wf_env: WfEnv, eakte_server: EAkteServer) -> None:
        clock = ManualClock(datetime.now(UTC))
        eakte = HttpEAkte(eakte_server.url)
        eakte_server.fail_next = 2
        ags = random_ags()
        async with running_app(wf_env, clock=clock, eakte=eakte, oidc_jwks_json=None,
                               oidc_jwks_url=f"{eakte_server.url}/jwks.json") as wf:
            event = submitted(ags, WOHNSITZ, DOCS)
            await wf_env.publish(event)
            app_id = event["application_id"]

            async def case() -> dict[str, Any] | None:
                return await case_of(wf_env.database_url, app_id)

            await eventually(case, lambda c: c is not None and c["state"] == "retrying")
            clock.advance(timedelta(minutes=30))  # second attempt: the E-Akte still answers 503
            await eventually(case, lambda c: c is not None and c["attempts"] == 2)
            clock.advance(timedelta(minutes=30))  # third attempt succeeds
            done = await eventually(case, lambda c: c is not None and c["state"] == "closed")
            assert done is not None
            key = f"{done['case_id']}:akte"
            assert eakte_server.calls[key] == 3
            assert list(eakte_server.documents) == [key]
            assert eakte_server.documents[key]["application_id"] == app_id
            assert done["context"]["filed"]["akte"] == f"akte:{key}"
            failed = [e["data"]["attempt"] for e in await outbox_of(wf_env.database_url, app_id)
                      if e["type"] == "workflow.step.failed"]
            assert failed == [1, 2]

            # tokens are verified with the key set fetched from the issuer's JWKS URL
            clerk = wf_env.signer.headers("sb", ["clerk"], [ags])
            view = await wf.client.get(f"/v1/cases/{done['case_id']}", headers=clerk)
            assert view.status_code == 200, view.text
            assert view.json()["outcome"] == "filed"

            metrics = (await wf.client.get("/metrics")).text
            for name in ("kp_workflow_step_latency_seconds_bucket", "kp_workflow_step_retries_total",
                         "kp_workflow_timer_lag_seconds_bucket", "kp_workflow_outbox_lag_seconds_bucket",
                         "kp_workflow_cases{", "kp_workflow_parked_cases", "kp_workflow_application_events_total"):
                assert name in metrics, name
            # the event's partition follows its key, so any partition of the test's topic may carry the lag
            topic = re.escape(wf_env.application_topic)
            lag = rf'kp_workflow_consumer_lag{{partition="\d+",topic="{topic}"}}'
            assert re.search(lag, metrics), "consumer lag of the application topic not exported"
            assert 'kp_workflow_step_retries_total{action="file"} 2.0' in metrics
        await eakte.aclose()
        assert types(await outbox_of(wf_env.database_url, app_id)).count("workflow.case.closed") == 1
